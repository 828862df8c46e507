"""Bounded waits on the database (--database-lock-timeout), and a PostgreSQL that refuses new connections.

A write that cannot get its lock (SQLite's write lock held by another process, a PostgreSQL row lock held by
another connection) is answered 503 "database busy: ..." once the timeout has passed, never left hanging;
reads go on meanwhile, and the write succeeds once the lock is free. A PostgreSQL that is up but refuses
new connections (max_connections reached, shutting down) is the service's 503 "database unavailable", not a 500.
"""

from __future__ import annotations

import asyncio
import base64
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest
import requests
from conftest import TEST_CONFIG, ServerThread
from private_postgres import PrivatePostgres
from sqlalchemy import text

from kms_service.config import load_service_config
from kms_service.storage.database import busy_reason, create_engine

LOCK_TIMEOUT = 1.0
SECRET = base64.b64encode(b"waiting").decode()
UNAVAILABLE = {"errors": ["database unavailable"]}

# Holds SQLite's write lock from another process until its stdin closes; says so once it holds it.
SQLITE_HOLDER = """
import sqlite3, sys
connection = sqlite3.connect(sys.argv[1], isolation_level=None)
connection.execute("BEGIN IMMEDIATE")
print("holding", flush=True)
sys.stdin.read()
connection.execute("ROLLBACK")
"""


class LockHolder:
    """Another process (SQLite) or connection (PostgreSQL) holding the lock a rotation of ``key`` needs."""

    def __init__(self, database_url: str, key: str) -> None:
        self.database_url, self.key = database_url, key
        self._process: subprocess.Popen[str] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._connection: asyncpg.Connection | None = None

    def __enter__(self) -> LockHolder:
        if self.database_url.startswith("sqlite"):
            path = self.database_url.removeprefix("sqlite:///")
            self._process = subprocess.Popen(
                [sys.executable, "-c", SQLITE_HOLDER, path], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
            )
            assert self._process.stdout is not None
            assert self._process.stdout.readline().strip() == "holding"
        else:
            self._loop = asyncio.new_event_loop()
            self._connection = self._loop.run_until_complete(asyncpg.connect(self.database_url))
            self._loop.run_until_complete(self._connection.execute("BEGIN"))
            locked = self._loop.run_until_complete(
                self._connection.fetch("SELECT id FROM keys WHERE name = $1 FOR UPDATE", self.key)
            )
            assert len(locked) == 1
        return self

    def __exit__(self, *_exc: object) -> None:
        if self._process is not None:
            self._process.communicate("", timeout=30)
        if self._loop is not None and self._connection is not None:
            self._loop.run_until_complete(self._connection.close())
            self._loop.close()


def test_a_write_waiting_for_a_lock_gets_a_503_after_the_timeout_while_reads_go_on(start_server, database_url):
    # cache_ttl 0: every read below asks the database.
    server = start_server(database_lock_timeout=LOCK_TIMEOUT, cache_ttl=0)
    headers = {"X-Vault-Token": server.root_token()}

    def send(method: str, path: str, body: dict | None = None) -> requests.Response:
        return requests.request(method, f"{server.url}/v1/{path}", json=body, headers=headers, timeout=60)

    ciphertext = send("POST", "transit/encrypt/vault-enc", {"plaintext": SECRET}).json()["data"]["ciphertext"]
    with LockHolder(database_url, "vault-enc"):
        started = time.monotonic()
        rotated = send("POST", "transit/keys/vault-enc/rotate")
        waited = time.monotonic() - started
        print(f"\na write held up by a lock: 503 after {waited:.2f} s (--database-lock-timeout {LOCK_TIMEOUT:g})")
        assert rotated.status_code == 503, rotated.text
        (message,) = rotated.json()["errors"]
        assert message.startswith("database busy: ") and "--database-lock-timeout" in message, message
        # Bounded: the timeout, not SQLite's 30 s nor PostgreSQL's forever.
        assert LOCK_TIMEOUT <= waited < LOCK_TIMEOUT + 10, waited
        # Reads go on while the lock is held.
        assert send("GET", "transit/keys/vault-enc").json()["data"]["latest_version"] == 1
        decrypted = send("POST", "transit/decrypt/vault-enc", {"ciphertext": ciphertext})
        assert decrypted.status_code == 200 and decrypted.json()["data"]["plaintext"] == SECRET
    # The lock released, the same write goes through; the refused one changed nothing.
    assert send("POST", "transit/keys/vault-enc/rotate").status_code == 200
    assert send("GET", "transit/keys/vault-enc").json()["data"]["latest_version"] == 2


@pytest.mark.parametrize("where", ["file", ":memory:"])
def test_sqlite_waits_for_its_lock_as_long_as_the_setting_says(tmp_path: Path, where: str):
    url = f"sqlite:///{tmp_path / 'kms.db'}" if where == "file" else "sqlite:///:memory:"

    async def busy_timeout() -> int:
        engine = create_engine(url, lock_timeout=2.5)
        try:
            async with engine.connect() as connection:
                return (await connection.execute(text("PRAGMA busy_timeout"))).scalar_one()
        finally:
            await engine.dispose()

    assert asyncio.run(busy_timeout()) == 2500


def test_a_request_waiting_for_a_pooled_connection_gives_up_after_the_timeout(database_url):
    """Every connection the pool may open is checked out: the next one waits the lock timeout, then is
    busy (503 "database busy: no pooled connection came free in time"), not left waiting."""

    async def exhaust() -> tuple[Exception, float]:
        engine = create_engine(database_url, lock_timeout=LOCK_TIMEOUT)
        held = []
        try:
            for _ in range(50):
                started = time.monotonic()
                try:
                    held.append(await engine.connect())
                except Exception as exc:  # noqa: BLE001 - the failure is what is checked
                    return exc, time.monotonic() - started
            raise AssertionError("the pool never ran out")
        finally:
            for connection in held:
                await connection.close()
            await engine.dispose()

    refused, waited = asyncio.run(exhaust())
    assert busy_reason(refused) == "no pooled connection came free in time", refused
    assert LOCK_TIMEOUT <= waited < LOCK_TIMEOUT + 10, waited


# -- PostgreSQL up, but refusing new connections --------------------------------------------------------------

MAX_CONNECTIONS = 20


@pytest.fixture
def crowded_postgres() -> Iterator[PrivatePostgres]:
    """A cluster of the test's own whose every connection slot a test can take (none kept for superusers)."""
    cluster = PrivatePostgres()
    try:
        with open(cluster.dir / "data" / "postgresql.conf", "a") as conf:
            conf.write(f"\nmax_connections = {MAX_CONNECTIONS}\nsuperuser_reserved_connections = 0\n")
        cluster.start()
        yield cluster
    finally:
        cluster.remove()


async def _take_every_slot(url: str) -> list[asyncpg.Connection]:
    taken = []
    while True:
        try:
            taken.append(await asyncpg.connect(url))
        except asyncpg.TooManyConnectionsError:
            return taken
        assert len(taken) <= MAX_CONNECTIONS


@pytest.mark.postgresql
def test_postgresql_refusing_new_connections_is_a_503_database_unavailable(crowded_postgres, tmp_path: Path):
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    server = ServerThread(crowded_postgres.url, data_dir, load_service_config(TEST_CONFIG), cache_ttl=0).start()
    loop = asyncio.new_event_loop()
    fillers: list[asyncpg.Connection] = []
    try:
        headers = {"X-Vault-Token": server.root_token()}

        def read_key() -> requests.Response:
            return requests.get(f"{server.url}/v1/transit/keys/vault-enc", headers=headers, timeout=60)

        assert read_key().status_code == 200
        # The server's pool keeps no idle connection; every slot the server does not hold is taken.
        server.call(server.kms.engine.dispose())
        fillers = loop.run_until_complete(_take_every_slot(crowded_postgres.url))
        refused = read_key()
        assert (refused.status_code, refused.json()) == (503, UNAVAILABLE), refused.text
        # Shutting down: connections already open go on, new ones are refused ("the database system is shutting
        # down"), until the last one ends.
        for filler in fillers[1:]:
            loop.run_until_complete(filler.close())
        fillers = fillers[:1]
        server.call(server.kms.engine.dispose())
        stop = ["pg_ctl", "-D", str(crowded_postgres.dir / "data"), "-m", "smart", "-W", "stop"]
        as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        subprocess.run([*as_postgres, *stop], check=True, capture_output=True, timeout=60)
        shutting_down = read_key()
        assert (shutting_down.status_code, shutting_down.json()) == (503, UNAVAILABLE), shutting_down.text
    finally:
        for filler in fillers:
            loop.run_until_complete(filler.close())
        loop.close()
        server.stop()
