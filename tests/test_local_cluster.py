"""deploy/local-cluster: the compose topology on one machine (the system's PostgreSQL, two nodes, Debian's
nginx on 127.0.0.1), brought up, used through nginx with hvac, and torn down by the same script."""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import asyncpg
import hvac
import pytest
import requests
from conftest import POSTGRES_URL
from processes import free_port, run_cli
from tools import find_tool

pytestmark = [pytest.mark.postgresql, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "deploy" / "local-cluster"
SECRET = base64.b64encode(b"through nginx").decode()


def require_nginx() -> None:
    find_tool("nginx", "nginx", "/usr/sbin/nginx")  # /usr/sbin is not always on PATH


def database_exists(name: str) -> bool:
    async def query() -> bool:
        conn = await asyncpg.connect(POSTGRES_URL, timeout=10)
        try:
            return await conn.fetchval("SELECT count(*) FROM pg_database WHERE datname = $1", name) == 1
        finally:
            await conn.close()

    return asyncio.run(query())


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}").exists() and "Z" not in Path(f"/proc/{pid}/stat").read_text().split()[2]


def test_local_cluster_up_used_through_nginx_with_hvac_then_down(tmp_path: Path, record_property):
    require_nginx()
    name = f"kms_lc_{uuid.uuid4().hex[:12]}"
    base, _, _ = POSTGRES_URL.rpartition("/")
    ports = [free_port() for _ in range(3)]
    state = tmp_path / "cluster"
    env = {k: v for k, v in os.environ.items() if not k.startswith("KMS_")}
    env.update(
        KMS_CLUSTER_DIR=str(state),
        KMS_CLUSTER_PORT=str(ports[0]),
        KMS_CLUSTER_NODE_PORTS=f"{ports[1]} {ports[2]}",
        KMS_DATABASE_URL=f"{base}/{name}",
        KMS_SERVICE=f"{sys.executable} -m kms_service",
        # Long: what one node changes reaches the other by notification, not by its cache expiring.
        KMS_CACHE_TTL="60",
    )

    def script(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(SCRIPT), *args], env=env, capture_output=True, text=True, timeout=180)

    started = time.monotonic()
    try:
        up = script("up")
        assert up.returncode == 0, up.stdout + up.stderr
        record_property("up_seconds", round(time.monotonic() - started, 1))
        assert database_exists(name) and f"created database {name}" in up.stdout
        status = script("status")
        assert status.returncode == 0, status.stdout
        assert status.stdout.count("running (pid") == 3 and status.stdout.count("sys/health 200") == 3
        pids = {line.split()[0][:-1]: int(line.split("pid ")[1].split(")")[0]) for line in status.stdout.splitlines()}
        assert all(alive(pid) for pid in pids.values())
        # The one master key both nodes share; an operator token from the CLI, as `up` prints it.
        master_key = (state / "master.key").read_text().strip()
        cli = {k: v for k, v in env.items() if not k.startswith("KMS_CLUSTER")}
        cli.update(KMS_MASTER_KEY=master_key, KMS_DATA_DIR=str(tmp_path / "cli"))
        token = run_cli(["token", "create", "--policy", "root", "--ttl", "1h"], cli).stdout.strip().splitlines()[-1]

        via_nginx = hvac.Client(url=f"http://127.0.0.1:{ports[0]}", token=token)
        node1 = hvac.Client(url=f"http://127.0.0.1:{ports[1]}", token=token)
        node2 = hvac.Client(url=f"http://127.0.0.1:{ports[2]}", token=token)
        assert via_nginx.sys.read_health_status(method="GET")["database"] == "available"
        via_nginx.secrets.transit.create_key("orders")
        first = via_nginx.secrets.transit.encrypt_data("orders", SECRET)["data"]["ciphertext"]
        assert first.startswith("vault-kms:v1:") or first.startswith("vault:v1:"), first
        for client in (node1, node2):  # the key made through nginx is on both nodes
            assert client.secrets.transit.decrypt_data("orders", first)["data"]["plaintext"] == SECRET
        # Rotated on one node, seen on the other (and through nginx) at once.
        node1.secrets.transit.rotate_key("orders")
        rotated = time.monotonic()
        while ":v2:" not in node2.secrets.transit.encrypt_data("orders", SECRET)["data"]["ciphertext"]:
            assert time.monotonic() - rotated < 5, "node 2 still encrypts with version 1"
        seen = time.monotonic() - rotated
        print(f"\nrotation on node 1 seen on node 2 after {seen * 1000:.1f} ms")
        record_property("rotation_seen_ms", round(seen * 1000, 1))
        assert seen < 1.0
        for _ in range(4):  # nginx spreads these over both nodes: each one answers with the new version
            assert ":v2:" in via_nginx.secrets.transit.encrypt_data("orders", SECRET)["data"]["ciphertext"]
        assert via_nginx.secrets.transit.decrypt_data("orders", first)["data"]["plaintext"] == SECRET
        served = (state / "logs" / "nginx-access.log").read_text()
        assert served.count("/v1/transit/encrypt/orders") >= 5

        down = script("down")
        assert down.returncode == 0, down.stdout + down.stderr
        assert all(f"stopped {name}" in down.stdout for name in pids), down.stdout
        assert not any(alive(pid) for pid in pids.values())
        for port in ports:
            with pytest.raises(requests.ConnectionError):
                requests.get(f"http://127.0.0.1:{port}/v1/sys/health", timeout=5)
        after = script("status")
        assert after.returncode != 0 and after.stdout.count("not running") == 3, after.stdout
        # down keeps the data: up again serves the same keys (the same database and master key).
        again = script("up")
        assert again.returncode == 0, again.stdout + again.stderr
        assert via_nginx.secrets.transit.decrypt_data("orders", first)["data"]["plaintext"] == SECRET
    finally:
        purged = script("down", "--purge")
    assert purged.returncode == 0, purged.stdout + purged.stderr
    assert not database_exists(name) and not state.exists()


def test_an_up_that_fails_stops_what_it_started(tmp_path: Path):
    require_nginx()
    name = f"kms_lc_{uuid.uuid4().hex[:12]}"
    base, _, _ = POSTGRES_URL.rpartition("/")
    ports = [free_port() for _ in range(3)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("KMS_")}
    env.update(
        KMS_CLUSTER_DIR=str(tmp_path / "cluster"),
        KMS_CLUSTER_PORT=str(ports[0]),
        KMS_CLUSTER_NODE_PORTS=f"{ports[1]} {ports[2]}",
        KMS_DATABASE_URL=f"{base}/{name}",
        KMS_SERVICE=f"{sys.executable} -m kms_service",
    )
    taken = socket.socket()  # nginx cannot listen on its port: up fails after starting both nodes
    try:
        taken.bind(("127.0.0.1", ports[0]))
        taken.listen()
        up = subprocess.run([str(SCRIPT), "up"], env=env, capture_output=True, text=True, timeout=180)
        assert up.returncode != 0
        assert "up failed; stopping what it started" in up.stderr, up.stderr
        assert "stopped node1" in up.stderr and "stopped node2" in up.stderr, up.stderr
        for port in ports[1:]:
            with pytest.raises(requests.ConnectionError):
                requests.get(f"http://127.0.0.1:{port}/v1/sys/health", timeout=5)
    finally:
        taken.close()
        subprocess.run([str(SCRIPT), "down", "--purge"], env=env, capture_output=True, text=True, timeout=180)
    assert not database_exists(name)
