"""PostgreSQL stopped and started again under load (``--stale-while-down``), on a cluster of the test's own.

Two nodes serve clients encrypting and decrypting through both. With the database stopped, each keeps
answering encrypt/decrypt/sign/verify/hmac for the tokens and keys it holds, past ``--cache-ttl``, until the
window counted from the outage's start has passed; writes and cold lookups get a 503 at once; after the
window everything is a 503. Once PostgreSQL is back both nodes recover by themselves, every acknowledged
ciphertext decrypts on both, and the uses answered on credit during the outage are stored.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import socket
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import asyncpg
import hvac
import hvac.exceptions
import pytest
import requests
from conftest import TEST_CONFIG
from private_postgres import PrivatePostgres
from processes import ServeProcess, cli_env, free_port, run_cli
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from kms_service.outage import DatabaseState, OutageWindow
from kms_service.seal import MasterKey
from kms_service.storage.database import connection_lost

pytestmark = pytest.mark.postgresql

WINDOW = 10.0  # --stale-while-down
CACHE_TTL = 1.0  # short: entries come due during the outage, which must not turn them into 503s
SECRET = base64.b64encode(b"attack at dawn").decode()
UNAVAILABLE = {"errors": ["database unavailable"]}


@pytest.fixture
def postgres() -> Iterator[PrivatePostgres]:
    cluster = PrivatePostgres()
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.remove()


def until(check: Callable[[], bool], limit: float, what: str) -> float:
    started = time.monotonic()
    while not check():
        assert time.monotonic() - started < limit, f"{what}: not within {limit} s"
        time.sleep(0.1)
    return time.monotonic() - started


class Load:
    """Threads encrypting through both nodes and decrypting what they got back, recording every answer."""

    def __init__(self, urls: list[str], token: str) -> None:
        self.urls = urls
        self.headers = {"X-Vault-Token": token}
        self.acknowledged: list[str] = []  # ciphertexts a node answered with 200
        self.answers: list[tuple[float, str, int]] = []  # (monotonic time answered, node, status)
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(n,)) for n in range(2)]

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(30)

    def _run(self, n: int) -> None:
        session = requests.Session()
        i = n
        while not self._stop.is_set():
            url = self.urls[i % len(self.urls)]
            i += 1
            try:
                made = session.post(
                    f"{url}/v1/transit/encrypt/vault-enc", json={"plaintext": SECRET}, headers=self.headers, timeout=10
                )
                self.answers.append((time.monotonic(), url, made.status_code))
                if made.status_code != 200:
                    assert made.json() and made.json()["errors"], made.text  # Vault's envelope, never empty
                    time.sleep(0.05)
                    continue
                ciphertext = made.json()["data"]["ciphertext"]
                self.acknowledged.append(ciphertext)
                back = session.post(
                    f"{url}/v1/transit/decrypt/vault-enc",
                    json={"ciphertext": ciphertext},
                    headers=self.headers,
                    timeout=10,
                )
                self.answers.append((time.monotonic(), url, back.status_code))
                if back.status_code == 200:
                    assert back.json()["data"]["plaintext"] == SECRET
            except requests.RequestException:
                self.answers.append((time.monotonic(), url, 0))

    def served(self, url: str, since: float) -> int:
        return sum(1 for at, node, status in self.answers if node == url and at >= since and status == 200)


def post(node: ServeProcess, path: str, token: str, body: dict | None = None) -> requests.Response:
    return requests.post(f"{node.url}/v1/{path}", json=body or {}, headers={"X-Vault-Token": token}, timeout=30)


def health(node: ServeProcess, query: str = "") -> requests.Response:
    return requests.get(f"{node.url}/v1/sys/health{query}", timeout=30)


def crypto_round(node: ServeProcess, token: str) -> None:
    """sign, verify, hmac and rewrap on warm keys (each node has used them before)."""
    signed = post(node, "transit/sign/vault-sign", token, {"input": SECRET})
    assert signed.status_code == 200, signed.text
    verified = post(
        node,
        "transit/verify/vault-sign",
        token,
        {"input": SECRET, "signature": signed.json()["data"]["signature"]},
    )
    assert verified.status_code == 200 and verified.json()["data"]["valid"] is True, verified.text
    hmac = post(node, "transit/hmac/vault-enc", token, {"input": SECRET})
    assert hmac.status_code == 200, hmac.text
    made = post(node, "transit/encrypt/vault-enc", token, {"plaintext": SECRET})
    rewrapped = post(node, "transit/rewrap/vault-enc", token, {"ciphertext": made.json()["data"]["ciphertext"]})
    assert rewrapped.status_code == 200, rewrapped.text


def database_metrics(node: ServeProcess, token: str) -> tuple[float, float]:
    """(kms_database_available, kms_database_outages_total) from the node's Prometheus text."""
    text = requests.get(
        f"{node.url}/v1/sys/metrics?format=prometheus", headers={"X-Vault-Token": token}, timeout=30
    ).text
    values = dict(line.split() for line in text.splitlines() if line.startswith("kms_database_"))
    return float(values["kms_database_available"]), float(values["kms_database_outages_total"])


def stored_encryptions(url: str) -> int:
    async def query() -> int:
        conn = await asyncpg.connect(url)
        try:
            return await conn.fetchval(
                "SELECT coalesce(sum(u.encryptions), 0) FROM key_version_usage u JOIN keys k ON k.id = u.key_id "
                "WHERE k.name = 'vault-enc'"
            )
        finally:
            await conn.close()

    return asyncio.run(query())


def test_postgresql_stopped_under_load_serves_warm_crypto_for_the_window_then_fails_closed_and_recovers(
    postgres: PrivatePostgres, tmp_path: Path, record_property
):
    env = cli_env(postgres.url, tmp_path / "data", KMS_MASTER_KEY=MasterKey.generate().export())
    args = ("--stale-while-down", str(WINDOW), "--cache-ttl", str(CACHE_TTL))
    a_node = ServeProcess(TEST_CONFIG, env, *args)
    b_node = ServeProcess(TEST_CONFIG, env, *args)
    c_node = ServeProcess(TEST_CONFIG, env, *args)  # stopped during the outage
    nodes = [a_node, b_node]
    try:
        root = run_cli(["token", "create", "--policy", "root", "--ttl", "1h"], env).stdout.strip().splitlines()[-1]
        made = post(a_node, "auth/token/create", root, {"policies": ["root"], "ttl": "1h"})
        cold_token = made.json()["auth"]["client_token"]  # never used on either node
        bad_code = health(a_node, "?standbycode=99")
        assert (bad_code.status_code, bad_code.json()) == (
            400,
            {"errors": ["standbycode must be an HTTP status code from 200 to 599"]},
        )
        for node in [*nodes, c_node]:
            assert health(node).json()["database"] == "available"
            crypto_round(node, root)
        batch = [{"plaintext": SECRET}] * 1500  # more than one usage block (1024): answered on credit below

        with Load([a_node.url, b_node.url], root) as load:
            until(lambda: len(load.acknowledged) >= 20, 30, "load before the outage")
            stopping = time.monotonic()
            postgres.stop()
            stopped = time.monotonic()

            # Within the window: warm crypto goes on past --cache-ttl; writes and cold lookups are 503 at once.
            time.sleep(CACHE_TTL + 0.5)
            for node in nodes:
                crypto_round(node, root)
                for path, token in (("transit/keys/made-while-down", root), ("transit/encrypt/vault-enc", cold_token)):
                    asked = time.monotonic()
                    refused = post(node, path, token, {"plaintext": SECRET})
                    assert (refused.status_code, refused.json()) == (503, UNAVAILABLE), (path, refused.text)
                    assert time.monotonic() - asked < 2.0, "a write or cold lookup waited on the dead database"
                cold_key = post(node, "transit/decrypt/never-loaded", root, {"ciphertext": "vault:v1:AAAA"})
                assert (cold_key.status_code, cold_key.json()) == (503, UNAVAILABLE)
                state = health(node)
                assert state.status_code == 429, state.text
                assert state.json()["database"] == "unavailable, serving from cache"
                assert state.json()["serving_from_cache_until"] > time.time()
                assert health(node, "?standbyok=true").status_code == 200
                assert health(node, "?standbycode=473").status_code == 473
                assert database_metrics(node, root) == (0.0, 1.0)
                # hvac with its defaults: warm encryption works, a write raises its VaultDown (503).
                client = hvac.Client(url=node.url, token=root)
                assert client.secrets.transit.encrypt_data("vault-enc", SECRET)["data"]["ciphertext"]
                with pytest.raises(hvac.exceptions.VaultDown, match="database unavailable"):
                    client.secrets.transit.rotate_key("vault-enc")
                on_credit = post(node, "transit/encrypt/vault-enc", root, {"batch_input": batch})
                assert on_credit.status_code == 200, on_credit.text
                load.acknowledged += [item["ciphertext"] for item in on_credit.json()["data"]["batch_results"]]
            # A node stopped now cannot give back its usage reservations: one line says so, no traceback.
            stopped_during = c_node.stop()
            assert c_node.proc.returncode == 0, stopped_during[-3000:]
            assert "Traceback" not in stopped_during and "stopping during a database outage" in stopped_during
            during = time.monotonic()
            until(lambda: all(load.served(n.url, during) >= 5 for n in nodes), WINDOW, "warm load in the window")

            # Past the window (counted from the outage's start, which no node can see before `stopping`):
            # everything is a 503.
            def closed() -> bool:
                return all(
                    post(n, "transit/encrypt/vault-enc", root, {"plaintext": SECRET}).status_code == 503 for n in nodes
                )

            until(closed, WINDOW + 15, "failing closed after the window")
            closed_at = time.monotonic()
            assert closed_at - stopping >= WINDOW
            for node in nodes:
                refused = post(node, "transit/decrypt/vault-enc", root, {"ciphertext": load.acknowledged[0]})
                assert refused.status_code == 503 and "stale-while-down" in refused.json()["errors"][0], refused.text
                state = health(node)
                assert (state.status_code, state.json().get("database")) == (503, "unavailable"), state.text
            # Every warm answer finished before the window could have closed was a success.
            early = [(at - stopping, status) for at, _, status in load.answers if at < stopping + WINDOW - 0.5]
            assert all(status == 200 for _, status in early), [e for e in early if e[1] != 200][:5]
            print(f"\nfailed closed {closed_at - stopped:.1f} s after the stop (window {WINDOW} s)")
            record_property("failed_closed_after_s", round(closed_at - stopped, 1))

            postgres.start()
            started = time.monotonic()

            def recovered() -> bool:
                return all(
                    post(n, "transit/encrypt/vault-enc", root, {"plaintext": SECRET}).status_code == 200
                    and health(n).status_code == 200
                    for n in nodes
                )

            took = until(recovered, 30, "recovery")
            print(f"both nodes serving again {took:.1f} s after PostgreSQL started")
            record_property("recovered_after_s", round(took, 1))
            after = time.monotonic()
            until(lambda: all(load.served(n.url, after) >= 5 for n in nodes), 30, "load after recovery")
            assert [database_metrics(n, root) for n in nodes] == [(1.0, 1.0)] * 2
        assert time.monotonic() - started < 60

        # Writes work on both nodes again, and what one makes the other sees.
        assert post(a_node, "transit/keys/made-after", root).status_code in (200, 204)
        assert post(b_node, "transit/encrypt/made-after", root, {"plaintext": SECRET}).status_code == 200
        # Nothing acknowledged is lost: every ciphertext decrypts on both nodes.
        items = [{"ciphertext": c} for c in load.acknowledged]
        for node in nodes:
            for chunk in range(0, len(items), 2000):
                reply = post(node, "transit/decrypt/vault-enc", root, {"batch_input": items[chunk : chunk + 2000]})
                assert reply.status_code == 200, reply.text
                results = reply.json()["data"]["batch_results"]
                assert [r.get("plaintext") for r in results] == [SECRET] * len(results)
        acknowledged = len(load.acknowledged)
    finally:
        outputs = [node.stop() for node in nodes]
        c_node.stop()
    for output in outputs:
        assert "Traceback" not in output, output[-3000:]
        assert "lost the database" in output and "the database is back" in output, output[-3000:]
    # Every acknowledged encryption is counted, those answered on credit during the outage included (the
    # nodes gave back their unused reservations as they stopped, so the count is close to exact).
    stored = stored_encryptions(postgres.url)
    assert stored >= acknowledged, (stored, acknowledged)


# -- the rules, without a database -------------------------------------------------------------------------


def test_the_window_counts_from_the_first_failure_and_ends_when_the_database_answers():
    window = OutageWindow(10.0)
    assert window.state(0.0) is DatabaseState.AVAILABLE
    assert window.trusts(4.9, 5.0, 0.0) and not window.trusts(5.0, 5.0, 0.0)
    assert window.failed(100.0) is True
    assert window.failed(105.0) is False  # later failures do not move the start
    assert window.state(109.9) is DatabaseState.STALE and window.trusts(3600.0, 5.0, 109.9)
    assert window.stale_until() == 110.0
    assert window.state(110.0) is DatabaseState.DOWN and not window.trusts(0.0, 5.0, 110.0)
    assert window.answered(120.0) == 20.0
    assert window.state(120.0) is DatabaseState.AVAILABLE and window.answered(121.0) is None
    closed = OutageWindow(0.0)
    closed.failed(1.0)
    assert closed.state(1.0) is DatabaseState.DOWN  # --stale-while-down 0: fail closed at once


def test_only_a_server_that_went_away_starts_an_outage():
    refused = ConnectionRefusedError(111, "Connection refused")
    assert connection_lost(refused)
    assert connection_lost(OperationalError("SELECT 1", {}, asyncpg.CannotConnectNowError("starting up")))
    wrapped = DBAPIError("SELECT 1", {}, Exception("adapter"), connection_invalidated=False)
    wrapped.orig.__cause__ = asyncpg.ConnectionDoesNotExistError("connection was closed")
    assert connection_lost(wrapped)
    assert connection_lost(DBAPIError("SELECT 1", {}, Exception("closed"), connection_invalidated=True))
    # A failing statement, a locked or missing SQLite file, a busy pool: not an outage.
    assert not connection_lost(OperationalError("SELECT 1", {}, sqlite3.OperationalError("database is locked")))
    assert not connection_lost(OperationalError("SELECT 1", {}, sqlite3.OperationalError("no such table: keys")))
    assert not connection_lost(DBAPIError("SELECT 1", {}, asyncpg.UndefinedTableError("no table")))
    assert not connection_lost(PoolTimeout("QueuePool limit reached"))
    assert not connection_lost(FileNotFoundError(2, "No such file", "/data/kms.db"))


# -- one node cut off while the other still reaches the database --------------------------------------------


class CuttableProxy:
    """A TCP proxy to PostgreSQL that a test can cut (every connection dropped, new ones refused) and
    restore on the same port: one node loses its database while the others keep theirs."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self._pairs: list[tuple[socket.socket, socket.socket]] = []
        self._listener: socket.socket | None = None
        self.restore()

    def restore(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def cut(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            # shutdown first: a close alone leaves the thread blocked in accept() listening (Linux).
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()
        for pair in self._pairs:
            for sock in pair:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
        self._pairs.clear()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # cut
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            self._pairs.append((client, upstream))
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        for sock in (source, sink):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


def test_a_node_cut_off_serves_what_it_holds_and_sees_what_changed_meanwhile_once_back(
    postgres: PrivatePostgres, tmp_path: Path
):
    proxy = CuttableProxy(postgres.port)
    master_key = MasterKey.generate().export()
    direct = cli_env(postgres.url, tmp_path / "b", KMS_MASTER_KEY=master_key)
    via_proxy = cli_env(
        f"postgresql://postgres@127.0.0.1:{proxy.port}/postgres", tmp_path / "a", KMS_MASTER_KEY=master_key
    )
    args = ("--stale-while-down", "60", "--cache-ttl", "60")
    b_node = ServeProcess(TEST_CONFIG, direct, *args)
    a_node = ServeProcess(TEST_CONFIG, via_proxy, *args)
    try:
        root = run_cli(["token", "create", "--policy", "root", "--ttl", "1h"], direct).stdout.strip().splitlines()[-1]
        body = {"plaintext": SECRET}
        assert ":v1:" in post(a_node, "transit/encrypt/vault-enc", root, body).json()["data"]["ciphertext"]
        proxy.cut()
        until(lambda: health(a_node).status_code == 429, 10, "node A noticing it is cut off")
        assert health(b_node).status_code == 200
        rotated = post(b_node, "transit/keys/vault-enc/rotate", root)
        assert rotated.status_code == 200, rotated.text
        newer = post(b_node, "transit/encrypt/vault-enc", root, body).json()["data"]["ciphertext"]
        assert ":v2:" in newer
        # A cannot hear of the rotation: it goes on with what it holds (bounded by the window), and a
        # ciphertext newer than its key is a 503, not a wrong "invalid version".
        assert ":v1:" in post(a_node, "transit/encrypt/vault-enc", root, body).json()["data"]["ciphertext"]
        too_new = post(a_node, "transit/decrypt/vault-enc", root, {"ciphertext": newer})
        assert (too_new.status_code, too_new.json()) == (503, UNAVAILABLE)
        proxy.restore()
        back = until(lambda: health(a_node).status_code == 200, 15, "node A back")
        # Back: the cache it kept is dropped (--cache-ttl 60 would otherwise keep version 1 for a minute).
        made = post(a_node, "transit/encrypt/vault-enc", root, body).json()["data"]["ciphertext"]
        assert ":v2:" in made, made
        reply = post(a_node, "transit/decrypt/vault-enc", root, {"ciphertext": newer})
        assert reply.status_code == 200 and reply.json()["data"]["plaintext"] == SECRET
        print(f"\nnode A serving current keys {back:.1f} s after its connection was restored")
    finally:
        output = a_node.stop()
        b_node.stop()
        proxy.cut()
    assert "Traceback" not in output, output[-3000:]
    assert "lost the database" in output and "the database is back" in output
