"""Several `kms-service serve` processes on one PostgreSQL: a change made on one node takes effect on every
other node at once (LISTEN/NOTIFY), background jobs run on one node at a time, and nodes starting together
provision the database once.

Every node runs with ``--cache-ttl 60``: anything seen within a second here came by notification, not by a
cache entry expiring. Each propagation figure is printed (``pytest -s``) and recorded as a property.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
import re
import signal
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path

import asyncpg
import hvac
import hvac.exceptions
import pytest
import requests
from conftest import POSTGRES_URL, TEST_CONFIG, _pg_execute
from processes import ServeProcess, cli_env, run_cli
from sqlalchemy import event

from kms_service.config import load_service_config
from kms_service.seal import MasterKey
from kms_service.service import KMS
from kms_service.service.cluster import CHANNEL, decode, encode
from kms_service.service.invalidation import Change, Kind
from kms_service.settings import Settings

pytestmark = pytest.mark.postgresql

SECRET = base64.b64encode(b"SECRET").decode()
CACHE_TTL = "60"
PROPAGATION_LIMIT = 1.0


@pytest.fixture
def pg_url() -> Iterator[str]:
    name = f"kms_test_{uuid.uuid4().hex[:12]}"
    try:
        asyncio.run(_pg_execute(f'CREATE DATABASE "{name}"'))
    except (OSError, asyncpg.PostgresError) as exc:
        pytest.fail(f"PostgreSQL is required at {POSTGRES_URL}: {exc}")
    base, _, _ = POSTGRES_URL.rpartition("/")
    yield f"{base}/{name}"
    asyncio.run(_pg_execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


class Cluster:
    def __init__(self, url: str, tmp_path: Path) -> None:
        self.url = url
        self.env = cli_env(url, tmp_path / "data", KMS_MASTER_KEY=MasterKey.generate().export())
        self.nodes: list[ServeProcess] = []

    def start(self, count: int, *args: str) -> list[ServeProcess]:
        """``count`` nodes started at the same moment."""
        with ThreadPoolExecutor(count) as pool:
            started = list(pool.map(lambda _: ServeProcess(TEST_CONFIG, self.env, *args), range(count)))
        self.nodes += started
        return started

    def root_token(self) -> str:
        """An operator token, made in this process (what `kms-service token create` does, minus its start-up)."""
        settings = Settings(database_url=self.url, master_key=MasterKey.from_text(self.env["KMS_MASTER_KEY"], "env"))

        async def create() -> str:
            async with KMS.session(settings) as kms:
                return (await kms.tokens.create(["root"], timedelta(hours=1)))[0]

        return asyncio.run(create())

    def query(self, sql: str, *args):
        async def run():
            conn = await asyncpg.connect(self.url)
            try:
                return await conn.fetch(sql, *args)
            finally:
                await conn.close()

        return asyncio.run(run())

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


@pytest.fixture
def cluster(pg_url: str, tmp_path: Path) -> Iterator[Cluster]:
    cluster = Cluster(pg_url, tmp_path)
    yield cluster
    cluster.stop()


def until(check: Callable[[], bool], limit: float = 5.0) -> float:
    """Poll ``check`` as fast as requests go; the seconds it took to hold (fails past ``limit``)."""
    started = time.monotonic()
    while not check():
        elapsed = time.monotonic() - started
        assert elapsed < limit, f"not seen after {elapsed:.2f} s"
    return time.monotonic() - started


def report(record_property, what: str, seconds: float) -> None:
    print(f"\npropagation of {what}: {seconds * 1000:.1f} ms")
    record_property(f"propagation_ms[{what}]", round(seconds * 1000, 1))
    assert seconds < PROPAGATION_LIMIT, f"{what} took {seconds:.3f} s to reach the other node"


def forbidden(call: Callable[[], object]) -> bool:
    try:
        call()
    except hvac.exceptions.Forbidden:
        return True
    return False


def test_changes_on_one_node_take_effect_on_the_other_within_a_second_even_across_a_reconnect(cluster, record_property):
    a_node, b_node = cluster.start(2, "--cache-ttl", CACHE_TTL)
    root = cluster.root_token()
    a = hvac.Client(url=a_node.url, token=root)
    b = hvac.Client(url=b_node.url, token=root)
    key = "prop-" + uuid.uuid4().hex[:8]

    # Key creation: B has looked for the key (and been told it is not there) just before A makes it.
    with pytest.raises(hvac.exceptions.InvalidPath):
        b.secrets.transit.read_key(key)
    a.secrets.transit.create_key(key)
    report(record_property, "key creation", until(lambda: _key_exists(b, key)))

    # Rotation: B encrypts with version 1 (cached for 60 s) until A's rotation reaches it.
    assert b.secrets.transit.encrypt_data(key, plaintext=SECRET)["data"]["key_version"] == 1
    a.secrets.transit.rotate_key(key)
    seconds = until(lambda: b.secrets.transit.encrypt_data(key, plaintext=SECRET)["data"]["key_version"] == 2)
    report(record_property, "rotation", seconds)

    # Config: A raises min_decryption_version; B stops decrypting version 1 ciphertexts.
    old = b.secrets.transit.encrypt_data(key, plaintext=SECRET, key_version=1)["data"]["ciphertext"]
    assert b.secrets.transit.decrypt_data(key, ciphertext=old)["data"]["plaintext"] == SECRET
    a.secrets.transit.update_key_configuration(key, min_decryption_version=2, deletion_allowed=True)
    report(record_property, "config change", until(lambda: _decrypt_refused(b, key, old)))

    # Deletion: B reads the key (cached) until A's delete reaches it.
    assert _key_exists(b, key)
    a.secrets.transit.delete_key(key)
    report(record_property, "key deletion", until(lambda: not _key_exists(b, key)))

    # Token revocation, over HTTP on A and from the CLI (another process, as an operator does it).
    for how in ("HTTP", "CLI"):
        created = a.auth.token.create(policies=["encrypt:vault-enc"], ttl="1h")["auth"]
        user = hvac.Client(url=b_node.url, token=created["client_token"])
        user.secrets.transit.encrypt_data("vault-enc", plaintext=SECRET)  # B caches the token for 60 s
        if how == "HTTP":
            a.auth.token.revoke_accessor(created["accessor"])
        else:
            run_cli(["token", "revoke", created["accessor"]], cluster.env)
        encrypt = user.secrets.transit.encrypt_data
        seconds = until(lambda encrypt=encrypt: forbidden(lambda: encrypt("vault-enc", plaintext=SECRET)))
        report(record_property, f"token revocation ({how})", seconds)

    # Policy document: A takes the grant away from a policy B's cached token carries.
    grant = 'path "transit/encrypt/vault-enc" { capabilities = ["update"] }'
    a.sys.create_or_update_acl_policy("writers", grant)
    created = a.auth.token.create(policies=["writers"], ttl="1h")["auth"]
    encrypt = hvac.Client(url=b_node.url, token=created["client_token"]).secrets.transit.encrypt_data
    encrypt("vault-enc", plaintext=SECRET)
    a.sys.create_or_update_acl_policy("writers", 'path "transit/encrypt/other" { capabilities = ["update"] }')
    seconds = until(lambda: forbidden(lambda: encrypt("vault-enc", plaintext=SECRET)))
    report(record_property, "policy change", seconds)

    # A node whose listening connection is cut reconnects, and drops what it may have missed meanwhile.
    b_transit, a_transit = b.secrets.transit, a.secrets.transit
    assert b_transit.encrypt_data("vault-enc", plaintext=SECRET)["data"]["key_version"] == 1
    before = _listener_pids(cluster, b_node)
    assert len(before) == 1
    # Cut it, then rotate on A at once: the notification may go out while B is not listening. B must
    # reconnect and drop its caches rather than use version 1 for the next 60 s.
    cluster.query("SELECT pg_terminate_backend($1)", before[0])
    a_transit.rotate_key("vault-enc")
    seconds = until(lambda: b_transit.encrypt_data("vault-enc", plaintext=SECRET)["data"]["key_version"] == 2)
    report(record_property, "rotation across a listener reconnect", seconds)
    until(lambda: len(_listener_pids(cluster, b_node)) == 1)
    assert _listener_pids(cluster, b_node) != before
    # And it listens again: the next rotation arrives by notification.
    a_transit.rotate_key("vault-enc")
    seconds = until(lambda: b_transit.encrypt_data("vault-enc", plaintext=SECRET)["data"]["key_version"] == 3)
    report(record_property, "rotation after the reconnect", seconds)


def _key_exists(client: hvac.Client, key: str) -> bool:
    try:
        client.secrets.transit.read_key(key)
    except hvac.exceptions.InvalidPath:
        return False
    return True


def _decrypt_refused(client: hvac.Client, key: str, ciphertext: str) -> bool:
    try:
        client.secrets.transit.decrypt_data(key, ciphertext=ciphertext)
    except hvac.exceptions.InvalidRequest:
        return True
    return False


def test_a_node_not_listening_for_changes_asks_the_database_rather_than_trust_its_cache(pg_url):
    """A node whose change listener is not listening (its connection dropped and not back yet: after a
    PostgreSQL restart it retries with backoff) hears no other node's change; meanwhile its caches ask the
    database before answering, so a rotation made on another node is seen at once, not after --cache-ttl
    (60 s here). Two nodes in this process, B's listener stopped."""
    master = MasterKey.generate().export()

    def settings() -> Settings:
        return Settings(database_url=pg_url, master_key=MasterKey.from_text(master, "env"), cache_ttl=60.0)

    async def run() -> tuple[int, int]:
        async with KMS.session(settings()) as a, KMS.session(settings()) as b:
            await a.provision(load_service_config(TEST_CONFIG))
            await a.start_cluster()
            await b.start_cluster()
            before = (await b.keys.get("vault-enc")).latest_version  # cached on B for 60 s
            await b.cluster.stop()  # B hears nothing from here on
            await a.keys.rotate("vault-enc")
            return before, (await b.keys.get("vault-enc")).latest_version

    assert asyncio.run(run()) == (1, 2)


def test_concurrent_rotations_on_three_nodes_give_contiguous_versions_seen_everywhere(cluster):
    nodes = cluster.start(3, "--cache-ttl", CACHE_TTL)
    root = cluster.root_token()
    clients = [hvac.Client(url=node.url, token=root) for node in nodes]
    for client in clients:
        client.secrets.transit.encrypt_data("vault-enc", plaintext=SECRET)  # every node caches version 1
    per_client = 8

    def rotate(client: hvac.Client) -> list[int]:
        return [client.secrets.transit.rotate_key("vault-enc")["data"]["latest_version"] for _ in range(per_client)]

    with ThreadPoolExecutor(len(clients)) as pool:
        results = list(pool.map(rotate, clients))
    latest = 1 + per_client * len(clients)
    seen = sorted(v for versions in results for v in versions)
    assert seen == list(range(2, latest + 1))  # each rotation made its own version, none skipped
    rows = cluster.query(
        "SELECT v.version FROM key_versions v JOIN keys k ON k.id = v.key_id WHERE k.name = $1 ORDER BY 1",
        "vault-enc",
    )
    assert [r["version"] for r in rows] == list(range(1, latest + 1))
    for client in clients:
        until(
            lambda client=client: (
                client.secrets.transit.encrypt_data("vault-enc", plaintext=SECRET)["data"]["key_version"] == latest
            ),
            PROPAGATION_LIMIT,
        )


def _listener_pids(cluster: Cluster, node: ServeProcess) -> list[int]:
    rows = cluster.query(
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND application_name LIKE $1",
        f"kms-service node % pid {node.proc.pid}",
    )
    return [r["pid"] for r in rows]


def _job_holders(cluster: Cluster, job_id: int) -> list[str]:
    """application_name of the sessions holding a background job's advisory lock."""
    rows = cluster.query(
        "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
        "WHERE l.locktype = 'advisory' AND l.granted AND l.database = (SELECT oid FROM pg_database "
        "WHERE datname = current_database()) AND l.classid = $1 AND l.objid = $2",
        0x6B6D73,
        job_id,
    )
    return [r["application_name"] for r in rows]


REAPED = re.compile(r"^(\S+ \S+) INFO kms_service\.service\.tokens: reaped (\d+) expired token", re.MULTILINE)
LEADS = re.compile(r"^(\S+ \S+) INFO kms_service\.service\.cluster: token reaper runs on this node", re.MULTILINE)


def test_the_token_reaper_runs_on_one_node_and_another_takes_over_when_it_dies(cluster):
    interval = 0.3
    nodes = cluster.start(
        2, "--cache-ttl", CACHE_TTL, "--reap-interval", str(interval), "--rotate-check-interval", str(interval)
    )
    by_pid = {node.proc.pid: node for node in nodes}
    holders = []

    def one_holder() -> bool:
        holders[:] = _job_holders(cluster, 1)
        return len(holders) == 1

    until(one_holder, 5)
    until(lambda: len(_job_holders(cluster, 2)) == 1, 5)  # key auto-rotation: one node too
    leader = by_pid[int(holders[0].rsplit(" ", 1)[1])]
    follower = next(node for node in nodes if node is not leader)
    root = cluster.root_token()
    client = hvac.Client(url=follower.url, token=root)

    def short_lived(count: int) -> list[str]:
        return [client.auth.token.create(policies=["default"], ttl="1s")["auth"]["accessor"] for _ in range(count)]

    def gone(accessors: list[str]) -> bool:
        listed = set(client.auth.token.list_accessors()["data"]["keys"])
        return not listed & set(accessors)

    first = short_lived(5)
    until(lambda: gone(first), 5)
    time.sleep(3 * interval)  # several more intervals in which only the leader may run the reaper
    assert _job_holders(cluster, 1) == holders  # still the same node

    leader_output = leader.stop(signal.SIGKILL)
    for job in (1, 2):
        until(lambda job=job: [h.endswith(f" pid {follower.proc.pid}") for h in _job_holders(cluster, job)] == [True])
    second = short_lived(5)
    until(lambda: gone(second), 5)
    follower_output = follower.stop()

    assert sum(int(n) for _, n in REAPED.findall(leader_output)) == len(first)
    assert sum(int(n) for _, n in REAPED.findall(follower_output)) == len(second)
    took_over = LEADS.findall(follower_output)
    assert len(took_over) == 1
    # The follower reaped nothing before it took over (log timestamps are the follower's own clock).
    assert all(stamp >= took_over[0] for stamp, _ in REAPED.findall(follower_output))


def test_three_nodes_starting_at_once_provision_an_empty_database_once(cluster):
    nodes = cluster.start(3)
    # They serve the same keys: a ciphertext from one node decrypts on another.
    root = cluster.root_token()
    ciphertext = hvac.Client(url=nodes[0].url, token=root).secrets.transit.encrypt_data("vault-enc", plaintext=SECRET)
    plaintext = hvac.Client(url=nodes[2].url, token=root).secrets.transit.decrypt_data(
        "vault-enc", ciphertext=ciphertext["data"]["ciphertext"]
    )
    assert plaintext["data"]["plaintext"] == SECRET
    for output in [node.stop() for node in nodes]:
        assert "Traceback" not in output and " ERROR " not in output and " WARNING " not in output, output
    config = load_service_config(TEST_CONFIG)
    keys = cluster.query(
        "SELECT k.name, count(v.version) AS versions FROM keys k JOIN key_versions v ON v.key_id = k.id GROUP BY 1"
    )
    assert {r["name"]: r["versions"] for r in keys} == dict.fromkeys(config.keys(), 1)
    endpoints = cluster.query("SELECT name FROM endpoints")
    assert sorted(r["name"] for r in endpoints) == sorted(config.endpoints)
    assert len(cluster.query("SELECT * FROM seal_check")) == 1
    secrets = [r["name"] for r in cluster.query("SELECT name FROM server_secrets")]
    assert len(secrets) == len(set(secrets))


def test_processes_sharing_one_sqlite_file_see_each_others_changes_within_a_second(tmp_path, record_property):
    """SQLite: several processes on one database file (serve twice, plus the CLI) read each other's changes
    from the change log."""
    data_dir = tmp_path / "data"
    env = cli_env(f"sqlite:///{data_dir / 'kms.db'}", data_dir)
    nodes = []
    try:
        nodes += [ServeProcess(TEST_CONFIG, env, "--cache-ttl", CACHE_TTL) for _ in range(2)]
        root = run_cli(["token", "create", "--policy", "root", "--ttl", "1h"], env).stdout.split()[-1]
        a, b = (hvac.Client(url=node.url, token=root) for node in nodes)
        assert b.secrets.transit.encrypt_data("vault-enc", plaintext=SECRET)["data"]["key_version"] == 1
        a.secrets.transit.rotate_key("vault-enc")
        version = lambda: b.secrets.transit.encrypt_data("vault-enc", plaintext=SECRET)["data"]["key_version"]  # noqa: E731
        seconds = until(lambda: version() == 2)
        report(record_property, "rotation (SQLite, another process)", seconds)

        created = a.auth.token.create(policies=["encrypt:vault-enc"], ttl="1h")["auth"]
        encrypt = hvac.Client(url=nodes[1].url, token=created["client_token"]).secrets.transit.encrypt_data
        encrypt("vault-enc", plaintext=SECRET)  # B caches the token for 60 s
        run_cli(["token", "revoke", created["accessor"]], env)
        seconds = until(lambda: forbidden(lambda: encrypt("vault-enc", plaintext=SECRET)))
        report(record_property, "token revocation (SQLite, CLI)", seconds)
    finally:
        for node in nodes:
            node.stop()


def test_change_payloads_fit_postgresql_and_fall_back_to_flushing_the_kinds_they_name(pg_url):
    reaped = [Change(Kind.TOKEN, f"acc{i:021d}") for i in range(2000)]
    assert decode(encode("n1", reaped[:3])) == ("n1", reaped[:3])
    big = encode("n1", [*reaped, Change(Kind.KEY, "k")])
    assert decode(big) == ("n1", [Change(Kind.KEY), Change(Kind.TOKEN)])  # every key and every token
    # A field this release does not know (a newer node's) cannot be ignored safely: drop everything.
    assert decode('{"node":"n2","changes":[{"kind":"key","name":"k","future":1}]}') == ("n2", None)
    assert decode("not json") == (None, None)

    async def notify(payload: str) -> None:
        conn = await asyncpg.connect(pg_url)
        try:
            await conn.execute("SELECT pg_notify($1, $2)", CHANNEL, payload)
        finally:
            await conn.close()

    asyncio.run(notify(big))
    unsplit = json.dumps({"changes": [dataclasses.asdict(c) for c in reaped]})
    with pytest.raises(asyncpg.InvalidParameterValueError, match="payload string too long"):
        asyncio.run(notify(unsplit))


def test_a_node_killed_under_load_loses_nothing_it_acknowledged_and_the_other_keeps_serving(cluster):
    a_node, b_node = cluster.start(2, "--cache-ttl", CACHE_TTL)
    headers = {"X-Vault-Token": cluster.root_token()}
    acknowledged: list[tuple[int, str]] = []  # (version rotated to, a ciphertext made right after)
    failures = {a_node.url: 0, b_node.url: 0}
    stop = threading.Event()

    def load(start: int) -> None:
        urls = [a_node.url, b_node.url]
        i = start
        while not stop.is_set():
            url = urls[i % 2]
            i += 1
            try:
                rotated = requests.post(f"{url}/v1/transit/keys/vault-enc/rotate", headers=headers, timeout=5)
                rotated.raise_for_status()
                made = requests.post(
                    f"{url}/v1/transit/encrypt/vault-enc", json={"plaintext": SECRET}, headers=headers, timeout=5
                )
                made.raise_for_status()
            except requests.RequestException:
                failures[url] += 1
                continue
            acknowledged.append((rotated.json()["data"]["latest_version"], made.json()["data"]["ciphertext"]))

    workers = [threading.Thread(target=load, args=(n,)) for n in range(4)]
    for worker in workers:
        worker.start()
    try:
        until(lambda: len(acknowledged) >= 20, 30)
        a_node.stop(signal.SIGKILL)
        count = len(acknowledged)
        until(lambda: len(acknowledged) >= count + 20, 30)  # B goes on serving
    finally:
        stop.set()
        for worker in workers:
            worker.join(30)
    assert failures[a_node.url] > 0 and failures[b_node.url] == 0, failures
    rows = cluster.query(
        "SELECT v.version FROM key_versions v JOIN keys k ON k.id = v.key_id WHERE k.name = $1 ORDER BY 1",
        "vault-enc",
    )
    stored = [r["version"] for r in rows]
    assert stored == list(range(1, len(stored) + 1))
    # Each acknowledged rotation made a version (a reply names the key's latest version, which a concurrent
    # rotation on the same node may already have passed).
    assert len(stored) >= 1 + len(acknowledged)
    assert {version for version, _ in acknowledged} <= set(stored)
    # Every ciphertext either node acknowledged still decrypts on B.
    batch = [{"ciphertext": ciphertext} for _, ciphertext in acknowledged]
    reply = requests.post(
        f"{b_node.url}/v1/transit/decrypt/vault-enc", json={"batch_input": batch}, headers=headers, timeout=30
    )
    assert reply.status_code == 200, reply.text
    assert [item["plaintext"] for item in reply.json()["data"]["batch_results"]] == [SECRET] * len(batch)


def test_a_read_racing_an_invalidation_is_not_trusted_afterwards(start_server):
    """A change published while a cache reads the database (a notification arriving mid-read) may postdate
    what was read: the key is checked again on its next use, the token is read again, instead of both
    being trusted for --cache-ttl."""
    server = start_server(cache_ttl=300)
    kms = server.kms
    token, _ = server.call(kms.tokens.create(["encrypt:vault-enc"], timedelta(hours=1)))
    statements: list[str] = []
    race = {"on": None}

    def during_read(conn, cursor, statement, parameters, context, executemany) -> None:
        statements.append(statement)
        if race["on"] and race["on"] in statement:
            race["on"] = None
            kms.invalidator.publish([Change(Kind.POLICY, "somewhere-else")])  # bumps the epoch only

    event.listen(kms.engine.sync_engine, "before_cursor_execute", during_read)
    try:
        for table, use in (
            ("FROM keys", lambda: server.call(kms.keys.get("vault-enc"))),
            ("FROM tokens", lambda: server.call(kms.tokens.authenticate(token))),
        ):
            kms.invalidator.flush_all()
            race["on"] = table
            assert use() is not None  # read while a change was published
            statements.clear()
            assert use() is not None
            assert any(table in s for s in statements), f"{table}: the raced read was trusted"
            statements.clear()
            assert use() is not None
            assert statements == [] or all(s.startswith("BEGIN") for s in statements)  # then cached again
    finally:
        event.remove(kms.engine.sync_engine, "before_cursor_execute", during_read)
