"""``kms-service serve --workers N``: real processes on one port, on SQLite and PostgreSQL.

Which worker holds a connection is read from the kernel: each worker's socket inodes (/proc/<pid>/fd) against
the established connections to the port (/proc/net/tcp and tcp6)."""

from __future__ import annotations

import base64
import os
import re
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import requests
from conftest import TEST_CONFIG
from processes import ServeProcess, cli_env, run_cli

PLAINTEXT = base64.b64encode(b"one port, two processes").decode()


@pytest.fixture
def env(database_url, data_dir):
    return cli_env(database_url, data_dir)


def until(check: Callable[[], bool], limit: float = 30.0) -> None:
    deadline = time.monotonic() + limit
    while not check():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.05)


def workers_of(parent: int) -> list[int]:
    """The worker processes of a ``serve`` (its children started by multiprocessing's spawn)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        ppid = int(stat.rpartition(")")[2].split()[1])
        if ppid == parent and b"spawn_main" in cmdline:
            found.append(int(entry.name))
    return sorted(found)


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return False
    return state != "Z"


def connections_to(port: int) -> set[str]:
    """Socket inodes of the server side of established TCP connections on ``port``."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if int(local.rpartition(":")[2], 16) == port and state == "01":
                inodes.add(inode)
    return inodes


def socket_inodes(pid: int) -> set[str]:
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    return inodes


def start(env: dict[str, str], *args: str) -> tuple[ServeProcess, list[int]]:
    """``serve --workers 2``, once the parent has printed its banner: every worker listens then (the first
    answers ServeProcess's health check before the second is up). The lines read are kept in ``head``."""
    server = ServeProcess(TEST_CONFIG, env, "--workers", "2", *args)
    server.head = ""
    while "  workers: " not in server.head:
        line = server.proc.stdout.readline()
        assert line, f"serve ended before its banner:\n{server.head}"
        server.head += line
    pids = [int(pid) for pid in re.search(r"workers: 2 \(pids (\d+), (\d+)\)", server.head).groups()]
    assert sorted(pids) == workers_of(server.proc.pid)
    return server, pids


def root_token(env: dict[str, str]) -> str:
    return run_cli(["token", "create", "--policy", "root", "--ttl", "1h"], env).stdout.split()[-1]


def test_connections_spread_over_the_workers_and_a_rotation_reaches_every_worker_within_a_second(env):
    server, pids = start(env)
    try:
        headers = {"X-Vault-Token": root_token(env)}
        made = requests.post(f"{server.url}/v1/transit/keys/spread", json={"type": "aes256-gcm96"}, headers=headers)
        assert made.status_code in (200, 204), made.text
        sessions = [requests.Session() for _ in range(40)]
        for session in sessions:  # every connection stays open, and each worker caches the key at version 1
            reply = session.post(
                f"{server.url}/v1/transit/encrypt/spread", json={"plaintext": PLAINTEXT}, headers=headers, timeout=10
            )
            assert reply.json()["data"]["ciphertext"].startswith("vault-kms:v1:")
        held = connections_to(server.port)
        per_worker = {pid: len(socket_inodes(pid) & held) for pid in pids}
        assert sum(per_worker.values()) >= 40, per_worker  # (and any connection not yet closed)
        assert all(count > 0 for count in per_worker.values()), per_worker

        rotated = requests.post(f"{server.url}/v1/transit/keys/spread/rotate", headers=headers, timeout=10)
        assert rotated.status_code in (200, 204), rotated.text
        time.sleep(1.0)  # the bound between processes (SQLite's change log is read every 150 ms)
        ciphertexts = set()
        for session in sessions:
            reply = session.post(
                f"{server.url}/v1/transit/encrypt/spread", json={"plaintext": PLAINTEXT}, headers=headers, timeout=10
            )
            ciphertexts.add(reply.json()["data"]["ciphertext"])
        assert all(c.startswith("vault-kms:v2:") for c in ciphertexts), ciphertexts
        for session, ciphertext in zip(sessions, sorted(ciphertexts) * 40, strict=False):
            reply = session.post(
                f"{server.url}/v1/transit/decrypt/spread", json={"ciphertext": ciphertext}, headers=headers, timeout=10
            )
            assert reply.json()["data"]["plaintext"] == PLAINTEXT
        for session in sessions:
            session.close()
    finally:
        output = server.stop()
    assert server.proc.returncode == 0, output


def test_sigterm_drains_every_worker_and_start_up_lines_are_printed_once(env):
    server, pids = start(env)
    output = server.head + server.stop(signal.SIGTERM)
    assert server.proc.returncode == 0, output
    assert not [pid for pid in pids if alive(pid)]
    assert output.count("serving vault-kms:1.12 service") == 1, output
    assert len(re.findall(r"serving \d+ key\(s\) from the services YAML", output)) == 1, output
    assert "Traceback" not in output, output


def test_workers_1_is_one_process(env):
    server = ServeProcess(TEST_CONFIG, env, "--workers", "1")
    try:
        assert requests.get(f"{server.url}/v1/sys/health", timeout=5).status_code == 200
        assert workers_of(server.proc.pid) == []
    finally:
        output = server.stop()
    assert server.proc.returncode == 0 and "workers:" not in output, output


def test_a_worker_that_dies_stops_the_service_with_one_line(env):
    server, pids = start(env)
    os.kill(pids[0], signal.SIGKILL)
    server.proc.wait(60)
    output = server.stop()
    assert server.proc.returncode == 1, output
    assert f"Error: worker 0 (pid {pids[0]}) ended (signal 9); stopped the other workers" in output, output
    assert not alive(pids[1])


def test_workers_end_when_their_parent_is_killed(env):
    server, pids = start(env)
    server.stop(signal.SIGKILL)
    until(lambda: not any(alive(pid) for pid in pids))


def test_background_jobs_run_in_one_worker(env):
    server, pids = start(env, "--reap-interval", "0.2", "--rotate-check-interval", "0.2")
    try:
        made = run_cli(["token", "create", "--policy", "root", "--ttl", "1s"], env).stdout
        accessor = made.split("accessor:")[1].split()[0]
        until(lambda: accessor not in run_cli(["token", "list"], env).stdout)
        time.sleep(1.0)  # five more intervals in which only one worker may take the jobs
    finally:
        output = server.head + server.stop()
    assert server.proc.returncode == 0, output
    for job in ("token reaper", "key auto-rotation"):
        leads = re.findall(rf"{job} runs (?:on this node|in this process \(pid (\d+)\))", output)
        assert len(leads) == 1, output
        if leads[0]:  # SQLite names the process holding the lock file
            assert int(leads[0]) in pids
    assert "reaped 1 expired token(s)" in output, output
    assert output.count("reaped ") == 1, output


def test_the_port_must_be_free_and_the_database_shared(tmp_path):
    data_dir = tmp_path / "data"
    memory = run_cli(
        ["serve", "--config", str(TEST_CONFIG), "--workers", "2"], cli_env("sqlite://", data_dir), check=False
    )
    assert memory.returncode == 1
    assert memory.stderr.strip().splitlines()[-1] == (
        "Error: an in-memory SQLite database lives in one process: use --workers 1"
    )
    taken = ServeProcess(TEST_CONFIG, cli_env(f"sqlite:///{tmp_path / 'a.db'}", data_dir), "--workers", "2")
    try:
        again = run_cli(
            ["serve", "--config", str(TEST_CONFIG), "--workers", "2", "--port", str(taken.port)],
            cli_env(f"sqlite:///{tmp_path / 'b.db'}", data_dir),
            check=False,
        )
    finally:
        taken.stop()
    assert again.returncode == 1
    last = again.stderr.strip().splitlines()[-1]
    assert last == f"Error: cannot listen on 127.0.0.1:{taken.port}: Address already in use"
