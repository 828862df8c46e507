"""The audit log (serve --audit-file / --audit-db), on SQLite and PostgreSQL, with hvac and real processes:
every request and answer recorded with its secrets hashed, chains that show a removed, moved or edited
record, rotation on SIGHUP, fail-closed when the file cannot be written, and a SIGKILL under load."""

from __future__ import annotations

import asyncio
import base64
import json
import signal
import subprocess
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import hvac
import pytest
import requests
from conftest import TEST_CONFIG
from processes import COMMAND, ServeProcess, cli_env, run_cli
from test_caching import StatementCounter

from kms_service.audit_records import HASH_PREFIX
from kms_service.web.request_audit import REFUSED

PLAINTEXT_BYTES = b"the audit log must never show this " + uuid.uuid4().hex.encode()
PLAINTEXT = base64.b64encode(PLAINTEXT_BYTES).decode()


def records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_bytes().splitlines()]


def first_column(database_url: str, query: str) -> list:
    """The first column of a query's rows, read as an operator would (sqlite3 / psql), not through the service."""
    if database_url.startswith("sqlite"):
        import sqlite3

        with sqlite3.connect(database_url.removeprefix("sqlite:///")) as conn:
            return [row[0] for row in conn.execute(query)]

    async def fetch() -> list:
        conn = await asyncpg.connect(database_url)
        try:
            return [row[0] for row in await conn.fetch(query)]
        finally:
            await conn.close()

    return asyncio.run(fetch())


def table_lines(database_url: str) -> list[str]:
    """The audit_records table."""
    return first_column(database_url, "SELECT line FROM audit_records ORDER BY id")


def forms(secret: str | bytes) -> list[bytes]:
    """A secret as it could leak: its raw bytes, its base64, and a Vault ciphertext's base64 part."""
    raw = secret.encode() if isinstance(secret, str) else secret
    found = [raw, base64.b64encode(raw)]
    if isinstance(secret, str) and secret.startswith("vault:v"):
        body = secret.split(":", 2)[2]
        found += [body.encode(), base64.b64decode(body)]
    elif isinstance(secret, str):
        try:
            found.append(base64.b64decode(secret, validate=True))
        except ValueError:
            pass
    return [f for f in found if len(f) >= 8]


def verify(env: dict[str, str], *args: str) -> tuple[int, str]:
    result = run_cli(["audit", "verify", *args], env, check=False)
    return result.returncode, result.stdout + result.stderr


@pytest.fixture
def env(database_url, data_dir):
    return cli_env(database_url, data_dir)


def test_every_request_via_hvac_is_recorded_in_file_and_table_with_no_secret_in_the_clear(
    start_server, database_url, tmp_path
):
    log = tmp_path / "audit.log"
    server = start_server(audit_file=log, audit_db=True, audit_flush_interval=0.2)
    root = server.root_token()
    client = server.client(root)
    transit = client.secrets.transit
    transit.create_key("audit-enc", exportable=True, allow_plaintext_backup=True)
    transit.create_key("audit-sign", key_type="ed25519")
    ciphertext = transit.encrypt_data("audit-enc", plaintext=PLAINTEXT)["data"]["ciphertext"]
    assert transit.decrypt_data("audit-enc", ciphertext=ciphertext)["data"]["plaintext"] == PLAINTEXT
    signature = transit.sign_data("audit-sign", hash_input=PLAINTEXT)["data"]["signature"]
    assert transit.verify_signed_data("audit-sign", hash_input=PLAINTEXT, signature=signature)["data"]["valid"]
    mac = transit.generate_hmac("audit-enc", hash_input=PLAINTEXT)["data"]["hmac"]
    exported = transit.export_key("audit-enc", key_type="encryption-key")["data"]["keys"]["1"]
    backup = transit.backup_key("audit-enc")["data"]["backup"]
    datakey = transit.generate_data_key("audit-enc", key_type="plaintext")["data"]
    random_bytes = transit.generate_random_bytes(n_bytes=32)["data"]["random_bytes"]
    # A large batch: its records are built off the event loop; every item hashed all the same.
    batch = [{"plaintext": base64.b64encode(f"batch item {i} {uuid.uuid4()}".encode()).decode()} for i in range(1000)]
    batch_results = transit.encrypt_data("audit-enc", batch_input=batch)["data"]["batch_results"]
    stranger = "hvs." + uuid.uuid4().hex
    with pytest.raises(hvac.exceptions.Forbidden):
        server.client(stranger).secrets.transit.encrypt_data("audit-enc", plaintext=PLAINTEXT)
    health = requests.get(f"{server.url}/v1/sys/health", timeout=10)
    assert health.status_code == 200
    server.stop()  # ends the chains and flushes the table

    secrets = {
        "root token": root,
        "stranger's token": stranger,
        "plaintext": PLAINTEXT,
        "ciphertext": ciphertext,
        "signature": signature,
        "hmac": mac,
        "exported key": exported,
        "backup": backup,
        "data key": datakey["plaintext"],
        "wrapped data key": datakey["ciphertext"],
        "random bytes": random_bytes,
        "first batch plaintext": batch[0]["plaintext"],
        "last batch plaintext": batch[-1]["plaintext"],
        "last batch ciphertext": batch_results[-1]["ciphertext"],
    }
    file_bytes = log.read_bytes()
    lines = table_lines(database_url)
    table_bytes = "\n".join(lines).encode()
    for name, secret in secrets.items():
        for form in forms(secret):
            assert form not in file_bytes, f"the {name} is in the audit file"
            assert form not in table_bytes, f"the {name} is in the audit table"

    found = records(log)
    assert [json.loads(line)["request"]["id"] for line in lines if json.loads(line)["type"] != "chain-end"] == [
        r["request"]["id"] for r in found if r["type"] != "chain-end"
    ]
    responses: dict[str, dict] = {}
    for record in found:
        if record["type"] == "response":
            responses.setdefault(record["request"]["path"], record)  # the first answer on each path
    requested = {r["request"]["id"] for r in found if r["type"] == "request"}
    encrypt = responses["transit/encrypt/audit-enc"]
    assert encrypt["request"]["id"] in requested  # recorded before it ran, and again with its answer
    assert encrypt["request"]["operation"] == "update" and encrypt["request"]["mount_type"] == "transit"
    assert encrypt["auth"]["policies"] == ["root"] and encrypt["auth"]["client_token"].startswith(HASH_PREFIX)
    hashes = server.kms.audit_keys
    assert encrypt["request"]["data"]["plaintext"] == hashes.hash(PLAINTEXT)
    assert encrypt["response"]["data"]["ciphertext"] == hashes.hash(ciphertext)
    assert encrypt["response"]["status"] == 200 and encrypt["error"] == ""
    assert responses["transit/keys/audit-enc"]["request"]["operation"] == "create"
    batch_records = [
        r for r in found if r["type"] == "response" and r["request"]["path"] == "transit/encrypt/audit-enc"
    ]
    batch_record = next(r for r in batch_records if "batch_results" in (r["response"]["data"] or {}))
    assert batch_record["request"]["data"]["batch_input"][-1] == {"plaintext": hashes.hash(batch[-1]["plaintext"])}
    assert batch_record["response"]["data"]["batch_results"][-1]["ciphertext"] == hashes.hash(
        batch_results[-1]["ciphertext"]
    )
    # The stranger's request: denied before any handler ran, so one response record, with the error.
    denied = [r for r in found if r["type"] == "response" and r["auth"] == {}]
    assert [(r["response"]["status"], r["error"]) for r in denied] == [(403, "permission denied")]
    assert "sys/health" not in responses  # unauthenticated paths are not audited (nor in Vault)
    assert found[-1]["type"] == "chain-end"


def test_audit_hash_finds_the_record_of_a_plaintext(start_server, env, tmp_path):
    log = tmp_path / "audit.log"
    server = start_server(audit_file=log)
    transit = server.client(server.endpoint_token("crypto")).secrets.transit
    transit.encrypt_data("vault-enc", plaintext=base64.b64encode(b"another value").decode())
    transit.encrypt_data("vault-enc", plaintext=PLAINTEXT)
    server.stop()
    hashed = run_cli(["audit", "hash", PLAINTEXT], env).stdout.strip()
    assert hashed.startswith(HASH_PREFIX) and len(hashed) == len(HASH_PREFIX) + 64
    holding = [line for line in log.read_text().splitlines() if hashed in line]
    assert [json.loads(line)["type"] for line in holding] == ["request", "response"]
    assert {json.loads(line)["request"]["path"] for line in holding} == {"transit/encrypt/vault-enc"}


def test_vaults_audit_api_lists_the_devices_and_hashes_as_the_log_does(start_server, tmp_path):
    from baocli import bao

    log = tmp_path / "audit.log"
    server = start_server(audit_file=log, audit_db=True)
    root = server.root_token()
    client = server.client(root)
    devices = client.sys.list_enabled_audit_devices()["data"]
    assert {path: device["type"] for path, device in devices.items()} == {"file/": "file", "db/": "db"}
    assert devices["file/"]["options"] == {"file_path": str(log)}
    assert sorted(json.loads(bao(server, root, "audit", "list", "-format=json").stdout)) == ["db/", "file/"]
    enabling = bao(server, root, "audit", "enable", "file", f"file_path={tmp_path / 'other.log'}", check=False)
    assert enabling.returncode != 0 and "serve --audit-file PATH" in enabling.stderr, enabling.stderr
    assert not (tmp_path / "other.log").exists()
    hashed = client.sys.calculate_hash(path="file", input_to_hash=PLAINTEXT)["data"]["hash"]
    assert hashed == server.kms.audit_keys.hash(PLAINTEXT)
    with pytest.raises(hvac.exceptions.InvalidRequest, match="unknown audit backend"):
        client.sys.calculate_hash(path="syslog", input_to_hash=PLAINTEXT)
    # Only a token with sudo on sys/audit lists the devices.
    crypto = server.client(server.endpoint_token("crypto"))
    with pytest.raises(hvac.exceptions.Forbidden):
        crypto.sys.list_enabled_audit_devices()
    server.stop()
    assert hashed in log.read_text()  # the hash request's own input, as recorded
    assert PLAINTEXT not in log.read_text()


@pytest.fixture
def closed_log(start_server, tmp_path) -> Path:
    """A log of a dozen requests from a server that has stopped (its chain ended and anchored)."""
    log = tmp_path / "audit.log"
    server = start_server(audit_file=log, audit_db=True, audit_flush_interval=0.2)
    transit = server.client(server.endpoint_token("crypto")).secrets.transit
    for _ in range(6):
        transit.encrypt_data("vault-enc", plaintext=PLAINTEXT)
    server.stop()
    assert len(records(log)) == 13
    return log


def test_verify_passes_on_an_intact_log_and_table(closed_log, env):
    code, out = verify(env, str(closed_log))
    assert code == 0, out
    assert "intact, 13 record(s), seq 1..13; tail: complete (the chain was closed)" in out, out
    code, out = verify(env, "--db")
    assert code == 0 and "intact, 13 record(s)" in out, out


def rewrite(path: Path, change) -> None:
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join(change(lines)))


def test_verify_detects_a_removed_record(closed_log, env):
    rewrite(closed_log, lambda lines: lines[:4] + lines[5:])
    code, out = verify(env, str(closed_log))
    assert code == 1, out
    assert "BROKEN: line 5: seq 6 follows seq 4: record(s) missing (seq 5..5); intact up to seq 4 (line 4)" in out


def test_verify_detects_reordered_records(closed_log, env):
    rewrite(closed_log, lambda lines: lines[:4] + [lines[5], lines[4]] + lines[6:])
    code, out = verify(env, str(closed_log))
    assert code == 1, out
    assert "records out of order; intact up to seq 4 (line 4)" in out, out


def test_verify_detects_an_edited_record(closed_log, env):
    def edit(lines):
        record = lines[6].replace(b'"operation":"update"', b'"operation":"read"')
        assert record != lines[6]
        return lines[:6] + [record] + lines[7:]

    rewrite(closed_log, edit)
    code, out = verify(env, str(closed_log))
    assert code == 1, out
    assert "BROKEN: line 7 (seq 7): edited (its hash does not match its content); intact up to seq 6" in out, out


def test_verify_detects_records_cut_off_the_end_by_the_anchor(closed_log, env):
    rewrite(closed_log, lambda lines: lines[:-3])
    code, out = verify(env, str(closed_log))
    assert code == 1, out
    assert "records seq 11..13 are missing from the end (the database anchored seq 13)" in out, out


def test_the_warm_crypto_path_makes_no_sql_with_both_sinks(start_server, tmp_path):
    log = tmp_path / "audit.log"
    # A flush interval longer than the test: any statement would be the request path's own.
    server = start_server(cache_ttl=300, audit_file=log, audit_db=True, audit_flush_interval=600)
    transit = server.client(server.endpoint_token("crypto")).secrets.transit
    ciphertext = transit.encrypt_data("vault-enc", plaintext=PLAINTEXT)["data"]["ciphertext"]  # warms caches
    before = len(records(log))
    counter = StatementCounter(server.kms.engine)
    try:
        for _ in range(25):
            transit.encrypt_data("vault-enc", plaintext=PLAINTEXT)
            transit.decrypt_data("vault-enc", ciphertext=ciphertext)
    finally:
        counter.close()
    assert counter.statements == []
    assert len(records(log)) == before + 100  # a request and a response record each, already in the file


def test_requests_are_refused_while_the_file_cannot_be_written_and_served_again_after(start_server, env, tmp_path):
    log = tmp_path / "audit.log"
    server = start_server(audit_file=log)
    root = server.root_token()
    headers = {"X-Vault-Token": root}
    encrypt = f"{server.url}/v1/transit/encrypt/vault-enc"
    assert requests.post(encrypt, json={"plaintext": PLAINTEXT}, headers=headers, timeout=10).status_code == 200
    # As root, permissions would not stop a write: put a directory where the file was.
    moved = tmp_path / "audit.log.moved"
    log.rename(moved)
    log.mkdir()
    create = f"{server.url}/v1/transit/keys/made-while-unaudited"
    for url, body in ((encrypt, {"plaintext": PLAINTEXT}), (create, {})):
        answer = requests.post(url, json=body, headers=headers, timeout=10)
        assert answer.status_code == 503, answer.text
        assert answer.json() == {"errors": ["audit log unavailable: no audit device could record the request"]}
    log.rmdir()
    assert requests.post(encrypt, json={"plaintext": PLAINTEXT}, headers=headers, timeout=10).status_code == 200
    # The refused create changed nothing.
    assert requests.get(create, headers=headers, timeout=10).status_code == 404
    server.stop()
    code, out = verify(env, str(moved), str(log))
    assert code == 0, out
    assert "tail: complete (the chain was closed)" in out
    assert "made-while-unaudited" in log.read_text()  # the 404 read, recorded; the refused create is in neither
    assert "made-while-unaudited" not in moved.read_text()


def _root_token(env: dict[str, str]) -> str:
    return run_cli(["token", "create", "--policy", "root", "--ttl", "1h"], env).stdout.split()[-1]


def test_sighup_rotation_keeps_every_workers_chain_verifiable(env, tmp_path):
    log = tmp_path / "audit.log"
    server = ServeProcess(TEST_CONFIG, env, "--audit-file", str(log), "--workers", "2")
    try:
        headers = {"X-Vault-Token": _root_token(env)}
        encrypt = f"{server.url}/v1/transit/encrypt/vault-enc"
        for _ in range(10):  # a new connection each: the kernel spreads them over the workers
            assert requests.post(encrypt, json={"plaintext": PLAINTEXT}, headers=headers, timeout=10).ok
        rotated = tmp_path / "audit.log.1"
        deadline = time.monotonic() + 60
        while len(first_column(env["KMS_DATABASE_URL"], "SELECT chain_id FROM audit_anchors WHERE sink = 'file'")) < 2:
            assert time.monotonic() < deadline, "the workers' chains were not anchored"
            # Until both have anchored: another new connection, which the kernel may give to either worker.
            assert requests.post(encrypt, json={"plaintext": PLAINTEXT}, headers=headers, timeout=10).ok
            time.sleep(0.05)
        rotated_at = datetime.now(UTC)  # both chains began before it
        log.rename(rotated)
        server.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 20
        while not log.exists():  # reopened on the signal, before any request
            assert time.monotonic() < deadline, "SIGHUP did not reopen the audit file"
            time.sleep(0.05)
        for _ in range(10):
            assert requests.post(encrypt, json={"plaintext": PLAINTEXT}, headers=headers, timeout=10).ok
    finally:
        output = server.stop()
    assert server.proc.returncode == 0, output
    code, out = verify(env, str(rotated), str(log))
    assert code == 0, out
    assert out.count("tail: complete (the chain was closed)") == 2, out  # one chain per worker
    # The new file alone: its chains do not start at seq 1, unless --since says the records given begin later.
    code, out = verify(env, str(log))
    assert code == 1 and out.count("the database anchored the chain from seq 1") == 2, out
    code, out = verify(env, str(log), "--since", rotated_at.isoformat())
    assert code == 0, out


def test_sigkill_under_four_writers_and_a_rotator_leaves_a_verifiable_chain_with_every_acknowledged_request(
    env, tmp_path
):
    log = tmp_path / "audit.log"
    server = ServeProcess(TEST_CONFIG, env, "--audit-file", str(log), "--audit-flush-interval", "0.2")
    headers = {"X-Vault-Token": _root_token(env)}
    acknowledged: list[str] = []
    stop = threading.Event()
    errors: list[str] = []

    def client(path: str, body: dict) -> None:
        with requests.Session() as session:
            while not stop.is_set():
                try:
                    answer = session.post(f"{server.url}/v1/{path}", json=body, headers=headers, timeout=10)
                except requests.RequestException:
                    return  # the server is gone
                if answer.status_code in (200, 204):
                    acknowledged.append(answer.headers["X-Request-Id"])
                else:
                    errors.append(answer.text)

    threads = [
        *(
            threading.Thread(target=client, args=("transit/encrypt/vault-enc", {"plaintext": PLAINTEXT}))
            for _ in range(4)
        ),
        threading.Thread(target=client, args=("transit/keys/vault-enc/rotate", {})),
    ]
    for thread in threads:
        thread.start()
    try:
        time.sleep(3)
        server.proc.send_signal(signal.SIGKILL)
        server.proc.wait(30)
    finally:
        stop.set()
        for thread in threads:
            thread.join(30)
        server.stop()
    assert errors == []
    assert len(acknowledged) > 50
    written = records(log)
    answered = {r["request"]["id"] for r in written if r["type"] == "response"}
    assert set(acknowledged) <= answered
    code, out = verify(env, str(log))
    assert code == 0, out
    assert "intact" in out and "the writer did not close the chain" in out, out


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_file_that_cannot_be_opened_stops_serve_in_one_line(env, tmp_path):
    blocked = tmp_path / "no-such-dir"
    result = subprocess.run(
        [*COMMAND, "serve", "--config", str(TEST_CONFIG), "--port", "0", "--audit-file", str(blocked / "x" / "a.log")],
        env={**env, "KMS_WORKERS": "1"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith("Error: --audit-file: cannot open"), result.stderr
    assert "Traceback" not in result.stderr


def test_a_last_record_cut_short_by_a_crash_is_reported_but_breaks_nothing(closed_log, env):
    # A crash while writing a record after the anchored ones: part of a line, no newline.
    rewrite(closed_log, lambda lines: [*lines, lines[3][:40]])
    code, out = verify(env, str(closed_log))
    assert code == 0, out
    assert "line 14: the last record is incomplete (cut short by a crash)" in out, out
    assert "intact, 13 record(s), seq 1..13" in out, out


class TableLock:
    """Holds audit_records locked from another connection, as a stuck or down database would (SQLite: the
    whole file's write lock; PostgreSQL: that table only)."""

    def __init__(self, database_url: str) -> None:
        self.database_url = database_url
        self._release = threading.Event()
        self._held = threading.Event()
        self._thread = threading.Thread(target=self._hold, daemon=True)

    def __enter__(self) -> TableLock:
        self._thread.start()
        assert self._held.wait(30), "could not lock audit_records"
        return self

    def __exit__(self, *exc: object) -> None:
        self._release.set()
        self._thread.join(30)

    def _hold(self) -> None:
        if self.database_url.startswith("sqlite"):
            import sqlite3

            conn = sqlite3.connect(self.database_url.removeprefix("sqlite:///"), isolation_level=None)
            conn.execute("BEGIN EXCLUSIVE")
            self._held.set()
            self._release.wait(120)
            conn.execute("ROLLBACK")
            conn.close()
            return

        async def hold() -> None:
            conn = await asyncpg.connect(self.database_url)
            try:
                async with conn.transaction():
                    await conn.execute("LOCK TABLE audit_records IN ACCESS EXCLUSIVE MODE")
                    self._held.set()
                    await asyncio.to_thread(self._release.wait, 120)
            finally:
                await conn.close()

        asyncio.run(hold())


def test_with_only_the_table_requests_are_refused_once_its_queue_is_full_and_served_again_after(
    start_server, database_url, env
):
    server = start_server(audit_db=True, audit_flush_interval=0.1, audit_db_queue=10)
    headers = {"X-Vault-Token": server.root_token()}
    random = f"{server.url}/v1/transit/random/16"  # no database on its path: only the audit table waits
    assert requests.post(random, headers=headers, timeout=10).status_code == 200
    time.sleep(0.5)  # flushed
    statuses: list[int] = []
    with TableLock(database_url):
        for _ in range(30):
            answer = requests.post(random, headers=headers, timeout=10)
            statuses.append(answer.status_code)
            if answer.status_code == 503:
                assert answer.json() == {"errors": [REFUSED]}
            time.sleep(0.02)
    # The queue holds ten records (five requests), and the one flush that took its lines waits on the lock
    # with them: at most ten requests get through, then every one is refused until the table takes records.
    assert statuses.count(200) <= 10 and statuses[-10:] == [503] * 10, statuses
    deadline = time.monotonic() + 30
    while requests.post(random, headers=headers, timeout=10).status_code != 200:
        assert time.monotonic() < deadline, "the table did not take records again"
        time.sleep(0.1)
    server.stop()
    code, out = verify(env, "--db")
    assert code == 0, out
    assert "tail: complete (the chain was closed)" in out, out


def execute(database_url: str, statement: str) -> None:
    """One statement on the database, as someone holding the database file or its password runs it."""
    if database_url.startswith("sqlite"):
        import sqlite3

        with sqlite3.connect(database_url.removeprefix("sqlite:///")) as conn:
            conn.execute(statement)
        return

    async def run() -> None:
        conn = await asyncpg.connect(database_url)
        try:
            await conn.execute(statement)
        finally:
            await conn.close()

    asyncio.run(run())


def test_verify_of_the_table_detects_a_deleted_row(closed_log, database_url, env):
    execute(database_url, "DELETE FROM audit_records WHERE seq = 5")
    code, out = verify(env, "--db")
    assert code == 1, out
    assert "seq 6 follows seq 4: record(s) missing (seq 5..5); intact up to seq 4" in out, out


def test_verify_detects_an_emptied_log_and_records_erased_from_the_start(closed_log, env):
    chain_id = records(closed_log)[0]["chain"]["id"]
    lines = closed_log.read_bytes().splitlines(keepends=True)
    rewrite(closed_log, lambda lines: lines[5:])
    code, out = verify(env, str(closed_log))
    assert code == 1, out
    assert (
        f"chain {chain_id}: BROKEN: the database anchored the chain from seq 1 but the first record in the files "
        "given is seq 6: records seq 1..5 are missing (name the earlier files, or --since)"
    ) in out, out
    closed_log.write_bytes(b"")
    code, out = verify(env, str(closed_log))
    assert code == 1, out
    assert f"chain {chain_id}: BROKEN: no records of chain {chain_id} in the files given" in out, out
    # The earlier records, named as a file of their own before the rest: intact.
    earlier = closed_log.with_name("audit.log.1")
    earlier.write_bytes(b"".join(lines[:5]))
    closed_log.write_bytes(b"".join(lines[5:]))
    code, out = verify(env, str(earlier), str(closed_log))
    assert code == 0 and "intact, 13 record(s), seq 1..13" in out, out


def test_since_says_where_the_records_given_begin(closed_log, env):
    chain_id = records(closed_log)[0]["chain"]["id"]
    first_time = records(closed_log)[0]["time"]
    after_the_chain = datetime.now(UTC).isoformat()  # the server stopped: its chain was anchored last before
    rewrite(closed_log, lambda lines: lines[5:])
    # From before the chain began, it must start at seq 1.
    code, out = verify(env, str(closed_log), "--since", "2000-01-01T00:00:00")
    assert code == 1 and "the first record in the files given is seq 6" in out, out
    # The chain began before TIME: it may start at any seq in the records given.
    code, out = verify(env, str(closed_log), "--since", after_the_chain)
    assert code == 0 and f"chain {chain_id}: intact, 8 record(s), seq 6..13" in out, out
    closed_log.write_bytes(b"")
    code, out = verify(env, str(closed_log), "--since", after_the_chain)
    assert code == 0 and "1 chain(s) anchored last before --since: not looked for" in out, out
    code, out = verify(env, str(closed_log), "--since", first_time)
    assert code == 1 and f"no records of chain {chain_id}" in out, out
    code, out = verify(env, str(closed_log), "--since", "yesterday")
    assert code == 2 and "'yesterday' is not an ISO 8601 time" in out, out


def test_verify_of_the_table_detects_rows_erased_from_the_start(closed_log, database_url, env):
    execute(database_url, "DELETE FROM audit_records WHERE seq <= 3")
    code, out = verify(env, "--db")
    assert code == 1, out
    assert "the database anchored the chain from seq 1 but the first record in the files given is seq 4" in out, out
    execute(database_url, "DELETE FROM audit_records")
    code, out = verify(env, "--db")
    assert code == 1 and "no records of chain" in out and "in the table" in out, out


def test_records_erased_from_the_start_and_a_record_removed_later_are_both_named(closed_log, env):
    rewrite(closed_log, lambda lines: lines[2:6] + lines[7:])
    code, out = verify(env, str(closed_log))
    assert code == 1, out
    assert (
        "the first record in the files given is seq 3: records seq 1..2 are missing (name the earlier files, or "
        "--since); then line 5: seq 8 follows seq 6: record(s) missing (seq 7..7)"
    ) in out, out
