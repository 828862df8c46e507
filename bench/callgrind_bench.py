"""Instructions per request: kms-service (``serve --workers 1``) against the bare handler, under callgrind.

``valgrind --tool=callgrind`` counts the instructions a process runs, not seconds: the count is the same
whatever else the machine is doing, so two versions of the code can be compared on a busy machine, and the
per-request cost of auth, ACL, usage counting and metrics shows apart from the scheduler's noise. Each target
is started under callgrind with instrumentation off (start-up is not counted), warmed up, and then:

1. an idle window: counters zeroed, nothing sent for ``--idle`` seconds, counters dumped. What a process
   does with no request at all (SQLite's change-log poller, the usage flush, timers) runs at this rate;
2. a load window: counters zeroed, ``--requests`` requests sent over ``--connections`` keep-alive
   connections, counters dumped.

Instructions per request = (load window − idle rate × load window's length) / requests. The load comes from
this process (plain HTTP/1.1 over sockets, one thread per connection); only the server is counted. The count
per request depends on the number of connections (fewer requests share each turn of the event loop with 4
than with 1: 478 k against 398 k per encrypt here), so compare runs made with the same ``--connections``.

    .venv/bin/python bench/callgrind_bench.py                      # encrypt, batch-100 encrypt and decrypt
    .venv/bin/python bench/callgrind_bench.py --quick              # the suite's size (tests/test_bench.py)

Writes ``bench/results/<UTC date and time>-callgrind.md`` (and .json) unless ``--out`` says elsewhere.
Needs valgrind (Debian's package: ``valgrind``, with ``callgrind_control``).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent))
import transit_bench  # noqa: E402

ROOT = transit_bench.ROOT
# Requests per load window, by operation (a batch-100 request runs about 15 times as many instructions). A
# window of a few seconds under callgrind: what the service does now and then because requests come (a cache
# entry read again past half its ttl, a usage block reserved) is spread over enough requests (200 encrypts
# gave 565 k per request, 1,000 gave 478 k, on 4 connections).
OPS = {"encrypt": 1000, "batch100-encrypt": 200, "batch100-decrypt": 200}
TARGETS = ["kms-1", "bare"]
# What every answer of an op holds (a 200 of another operation does not).
ANSWERS = {"encrypt": b'"ciphertext"', "batch100-encrypt": b'"ciphertext"', "batch100-decrypt": b'"plaintext"'}
# Under callgrind a Python server starts 20 to 50 times slower than natively.
START_TIMEOUT = 600.0
WARM_UP_REQUESTS = 20
TOTALS = re.compile(rb"^(?:totals|summary): (\d+)", re.MULTILINE)


@dataclass
class Counted:
    """A server under callgrind: its process, where its dumps go, and how to reach it."""

    name: str
    url: str
    token: str
    proc: subprocess.Popen
    dumps: Path

    def control(self, *args: str) -> None:
        subprocess.run(["callgrind_control", *args, str(self.proc.pid)], check=True, capture_output=True, timeout=120)

    def window(self, work) -> tuple[int, float]:
        """Instructions the server ran, and seconds, while ``work()`` ran (counters zeroed before)."""
        self.control("--zero")
        started = time.monotonic()
        work()
        elapsed = time.monotonic() - started
        before = set(self.dumps.iterdir())
        self.control("--dump")
        (dump,) = set(self.dumps.iterdir()) - before
        found = TOTALS.search(dump.read_bytes())
        if found is None:
            raise SystemExit(f"{self.name}: no instruction total in {dump}")
        return int(found.group(1)), elapsed

    def post(self, path: str, body: dict) -> dict:
        """``POST /v1/<path>`` outside any window; its data."""
        reply = requests.post(f"{self.url}/v1/{path}", json=body, headers={"X-Vault-Token": self.token}, timeout=120)
        reply.raise_for_status()
        return (reply.json().get("data") or {}) if reply.content else {}  # 204: no body

    def stop(self) -> None:
        transit_bench.stop_process(self.proc, 120)  # a process under valgrind takes a while to exit


def start(name: str, workdir: Path) -> Counted:
    """``name`` (kms-1 or bare) under callgrind, instrumentation off until the measurement."""
    dumps = workdir / f"{name}-dumps"
    dumps.mkdir()
    port = transit_bench.free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("KMS_")}
    if name == "bare":
        command = [sys.executable, str(ROOT / "bench" / "bare_server.py"), str(port)]
    else:
        config = workdir / "services.yaml"
        config.write_text(transit_bench.SERVICES_YAML)
        env["KMS_DATA_DIR"] = str(workdir / "kms-data")
        command = [*transit_bench.KMS, "serve", "--config", str(config), "--port", str(port), "--workers", "1"]
    valgrind = [
        "valgrind",
        "--tool=callgrind",
        "--instr-atstart=no",
        f"--callgrind-out-file={dumps}/callgrind.out.%p",
    ]
    log = open(workdir / f"{name}.log", "w")  # noqa: SIM115 - closed when the server has stopped
    proc = subprocess.Popen([*valgrind, *command], env=env, stdout=log, stderr=subprocess.STDOUT, cwd=workdir)
    url = f"http://127.0.0.1:{port}"
    counted = Counted(name, url, "none", proc, dumps)
    try:
        transit_bench.wait_healthy(url, proc, START_TIMEOUT, workdir / f"{name}.log")
        if name != "bare":
            create = [*transit_bench.KMS, "token", "create", "--policy", "root", "--ttl", "2h"]
            counted.token = subprocess.run(create, env=env, capture_output=True, text=True, check=True).stdout.split()[
                -1
            ]
            counted.post("transit/keys/bench-enc", {"type": "chacha20-poly1305"})
    except BaseException:
        counted.stop()
        log.close()
        raise
    log.close()  # the child keeps its own descriptor
    return counted


def request_bytes(target: Counted, op: str) -> bytes:
    """One request of ``op``, as sent on each connection. Batch decrypt opens this target's own ciphertexts
    (each server has its own key), made here, before any window."""
    if op == "encrypt":
        path, body = "encrypt", {"plaintext": transit_bench.PLAINTEXT}
    elif op == "batch100-encrypt":
        path, body = "encrypt", transit_bench.batch_body(100)
    else:
        path, body = "decrypt", transit_bench.batch_decrypt_body(target.post, 100)
    text = json.dumps(body)
    return (
        f"POST /v1/transit/{path}/bench-enc HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"X-Vault-Token: {target.token}\r\nContent-Length: {len(text)}\r\n\r\n{text}"
    ).encode()


def _read_response(sock: socket.socket, buffer: bytearray) -> tuple[int, bytes]:
    """Read one whole response (Content-Length framed) off ``sock``; its status and body. What follows stays
    in ``buffer``."""
    while b"\r\n\r\n" not in buffer:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("the server closed the connection")
        buffer += chunk
    head, _, _ = bytes(buffer).partition(b"\r\n\r\n")
    length = int(re.search(rb"(?im)^content-length: *(\d+)", head).group(1))
    end = len(head) + 4 + length
    while len(buffer) < end:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("the server closed the connection")
        buffer += chunk
    status = int(head.split(b" ", 2)[1])
    body = bytes(buffer[len(head) + 4 : end])
    del buffer[:end]
    return status, body


def send(target: Counted, op: str, request: bytes, count: int, connections: int) -> None:
    """``count`` times ``request`` (an ``op``) over ``connections`` keep-alive connections, each one after
    the other's answer; any answer but a 200 with the op's results stops the run."""
    expected = ANSWERS[op]
    host, port = target.url.removeprefix("http://").split(":")
    failures: list[str] = []
    shares = [count // connections + (1 if i < count % connections else 0) for i in range(connections)]

    def client(share: int) -> None:
        try:
            with socket.create_connection((host, int(port)), timeout=300) as sock:
                buffer = bytearray()
                for _ in range(share):
                    sock.sendall(request)
                    status, body = _read_response(sock, buffer)
                    if status != 200 or expected not in body:
                        failures.append(f"{target.name} {op}: answered {status} {body[:200]!r}")
                        return
        except OSError as exc:
            failures.append(f"{target.name} {op}: {exc}")

    threads = [threading.Thread(target=client, args=(share,)) for share in shares if share]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failures:
        raise SystemExit(failures[0])


def measure(target: Counted, op: str, count: int, connections: int, idle: float) -> dict:
    request = request_bytes(target, op)
    send(target, op, request, WARM_UP_REQUESTS if op == "encrypt" else max(2, WARM_UP_REQUESTS // 5), connections)
    idle_instructions, idle_seconds = target.window(lambda: time.sleep(idle))
    load_instructions, load_seconds = target.window(lambda: send(target, op, request, count, connections))
    idle_rate = idle_instructions / idle_seconds
    per_request = (load_instructions - idle_rate * load_seconds) / count
    return {
        "op": op,
        "target": target.name,
        "requests": count,
        "instructions": load_instructions,
        "seconds": round(load_seconds, 2),
        "idle_per_second": round(idle_rate),
        "per_request": round(per_request),
        "per_request_with_idle": round(load_instructions / count),
    }


def report(rows: list[dict], out: Path, args: argparse.Namespace) -> Path:
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H%M%SZ")
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{stamp}-callgrind.md"
    versions = transit_bench.machine("python", [])
    lines = [
        f"# Instructions per request {stamp}",
        "",
        f"- valgrind: {transit_bench._command_version(['valgrind', '--version'])}",
        *(f"- {name}: {value}" for name, value in versions.items() if name != "load generator"),
        f"- command: `{' '.join(['bench/callgrind_bench.py', *args.argv])}`",
        f"- {args.connections} keep-alive connection(s); idle window {args.idle} s; start-up not counted "
        "(instrumentation switched on once healthy), then warm-up requests before each op's windows",
        "- per request: (load window − idle rate × its length) / requests; counted, not timed, it hardly moves "
        "with the machine's load (only through how many requests share a turn of the event loop)",
        "",
        "| op | target | requests | instructions / request | idle instructions / s | with idle, / request |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row['op']} | {row['target']} | {row['requests']} | {row['per_request']:,} | "
            f"{row['idle_per_second']:,} | {row['per_request_with_idle']:,} |"
        )
    by = {(row["op"], row["target"]): row["per_request"] for row in rows}
    ratios = [
        f"| {op} | {by[(op, 'bare')] / by[(op, 'kms-1')]:.2f} |"
        for op in dict.fromkeys(row["op"] for row in rows)
        if by.get((op, "bare")) and by.get((op, "kms-1"))
    ]
    if ratios:
        lines += ["", "## bare / kms-1 (instructions per request)", "", "| op | ratio |", "|---|---:|", *ratios]
    path.write_text("\n".join(lines) + "\n")
    path.with_suffix(".json").write_text(json.dumps({"rows": rows}, indent=2) + "\n")
    return path


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ops", default=",".join(OPS), help=f"comma-separated subset of {','.join(OPS)}")
    parser.add_argument("--targets", default=",".join(TARGETS), help=f"comma-separated subset of {','.join(TARGETS)}")
    parser.add_argument("--requests", type=int, help="per load window (default: 1,000 encrypts, 200 batch-100s)")
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--idle", type=float, default=10.0, help="seconds of the idle window")
    parser.add_argument("--quick", action="store_true", help="the suite's size: 10 requests, a 2 s idle window")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results"))
    args = parser.parse_args(argv)
    args.argv = list(argv if argv is not None else sys.argv[1:])
    ops = args.ops.split(",")
    targets = args.targets.split(",")
    unknown = sorted({*ops} - set(OPS)) + sorted({*targets} - set(TARGETS))
    if unknown:
        parser.error(f"unknown: {', '.join(unknown)}")
    if args.quick:
        args.requests, args.idle = args.requests or 10, 2.0
    for tool in ("valgrind", "callgrind_control"):
        if shutil.which(tool) is None:
            parser.error(f"{tool} is not installed (Debian's package: valgrind)")
    rows = []
    with tempfile.TemporaryDirectory(prefix="kms-callgrind-") as tmp:
        for name in targets:
            target = start(name, Path(tmp))
            try:
                target.control("--instr=on")
                for op in ops:
                    rows.append(measure(target, op, args.requests or OPS[op], args.connections, args.idle))
                    print(json.dumps(rows[-1]), flush=True)
            finally:
                target.stop()
    path = report(rows, Path(args.out), args)
    print(f"report: {path}")
    return path


if __name__ == "__main__":
    main()
