"""Logs as operators see them: the real ``kms-service`` process, its standard error read line by line.

One access line per request (request id, route template, status, latency, the token's accessor), the same
request id in ``X-Request-Id`` and in Vault's ``request_id``; JSON lines that parse; never a token, a
plaintext, a ciphertext or the master key; Alembic only at debug; the first start's master-key warning.
"""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import pytest
import requests
from processes import ServeProcess, cli_env, run_cli

from kms_service import cli

ROOT = Path(__file__).resolve().parents[1]
TEST_CONFIG = ROOT / "tests" / "data" / "services.yaml"
BOGUS_TOKEN = "kms." + "A" * 43


def root_token(env: dict[str, str]) -> tuple[str, str]:
    """A root token and its accessor, from the CLI (after ``migrate``: token create never makes a database)."""
    run_cli(["migrate"], env)
    lines = run_cli(["token", "create", "--policy", "root", "--ttl", "1h"], env).stdout.strip().splitlines()
    accessor = next(line.split()[-1] for line in lines if line.startswith("accessor:"))
    return lines[-1], accessor


@pytest.mark.sqlite_only  # the access log: the database plays no part
def test_json_access_log_one_line_per_request_and_never_a_secret(database_url, data_dir):
    env = cli_env(database_url, data_dir)
    token, accessor = root_token(env)
    server = ServeProcess(TEST_CONFIG, env, "--access-log", "--log-format", "json")
    headers = {"X-Vault-Token": token}
    plaintext = base64.b64encode(b"a plaintext nobody may log").decode()
    ids = {}
    try:
        encrypted = requests.post(
            f"{server.url}/v1/transit/encrypt/vault-enc", json={"plaintext": plaintext}, headers=headers, timeout=30
        )
        assert encrypted.status_code == 200
        # The same id in the header and in Vault's request_id.
        assert encrypted.headers["X-Request-Id"] == encrypted.json()["request_id"]
        ids["encrypt"] = encrypted.headers["X-Request-Id"]
        ciphertext = encrypted.json()["data"]["ciphertext"]
        decrypted = requests.post(
            f"{server.url}/v1/transit/decrypt/vault-enc", json={"ciphertext": ciphertext}, headers=headers, timeout=30
        )
        assert decrypted.json()["data"]["plaintext"] == plaintext
        ids["decrypt"] = decrypted.headers["X-Request-Id"]
        # A token in the body, and a token in Vault's auth block.
        looked_up = requests.post(
            f"{server.url}/v1/auth/token/lookup", json={"token": token}, headers=headers, timeout=30
        )
        assert looked_up.status_code == 200
        ids["lookup"] = looked_up.headers["X-Request-Id"]
        child = requests.post(f"{server.url}/v1/auth/token/create", json={"ttl": "1h"}, headers=headers, timeout=30)
        assert child.headers["X-Request-Id"] == child.json()["request_id"]
        child_token = child.json()["auth"]["client_token"]
        ids["create"] = child.headers["X-Request-Id"]
        refused = requests.get(
            f"{server.url}/v1/transit/keys/vault-enc", headers={"X-Vault-Token": BOGUS_TOKEN}, timeout=30
        )
        assert refused.status_code == 403
        ids["refused"] = refused.headers["X-Request-Id"]
        unknown = requests.get(f"{server.url}/v1/transit/no/such/path?secret=x", headers=headers, timeout=30)
        assert unknown.status_code == 404
        ids["unknown"] = unknown.headers["X-Request-Id"]
        assert len(set(ids.values())) == len(ids)
    finally:
        output = server.stop()

    lines = [json.loads(line) for line in output.splitlines() if line.strip()]  # every line is JSON
    assert all({"time", "level", "logger", "message"} <= set(line) for line in lines)
    access = [line for line in lines if line["logger"] == "kms_service.access"]
    by_id = {}
    for line in access:
        assert line["request_id"] not in by_id, "one line per request"
        by_id[line["request_id"]] = line
    encrypt = by_id[ids["encrypt"]]
    assert encrypt["route"] == "transit/encrypt/:name" and encrypt["method"] == "POST"
    assert encrypt["status"] == 200 and encrypt["accessor"] == accessor and encrypt["duration_ms"] > 0
    assert by_id[ids["decrypt"]]["route"] == "transit/decrypt/:name"
    assert by_id[ids["lookup"]]["route"] == "auth/token/lookup"
    assert by_id[ids["create"]]["accessor"] == accessor
    assert by_id[ids["refused"]]["status"] == 403 and by_id[ids["refused"]]["accessor"] is None
    assert by_id[ids["unknown"]]["status"] == 404 and by_id[ids["unknown"]]["route"] == "unmatched"

    master_key = (data_dir / "master.key").read_text().strip()
    secrets = {
        "token": token,
        "child token": child_token,
        "bogus token": BOGUS_TOKEN,
        "plaintext": plaintext,
        "plaintext bytes": "a plaintext nobody may log",
        "ciphertext": ciphertext,
        "ciphertext body": ciphertext.rsplit(":", 1)[1],
        "master key": master_key,
        "query string": "secret=x",
        "key name": "vault-enc",  # not a secret, but the access line carries templates only
    }
    access_text = "\n".join(json.dumps(line) for line in access)
    assert [name for name, value in secrets.items() if value in access_text] == []
    del secrets["key name"]  # "created key vault-enc" is a normal log line
    assert [name for name, value in secrets.items() if value in output] == []


@pytest.mark.sqlite_only  # the access log: the database plays no part
def test_text_access_log_and_none_by_default(database_url, data_dir):
    env = cli_env(database_url, data_dir)
    token, accessor = root_token(env)
    quiet = ServeProcess(TEST_CONFIG, env)
    try:
        silent_id = requests.get(f"{quiet.url}/v1/sys/health", timeout=30).headers["X-Request-Id"]
    finally:
        output = quiet.stop()
    assert silent_id not in output and "kms_service.access" not in output

    server = ServeProcess(TEST_CONFIG, env, "--access-log")
    try:
        answer = requests.get(f"{server.url}/v1/transit/keys/vault-sign", headers={"X-Vault-Token": token}, timeout=30)
        request_id = answer.headers["X-Request-Id"]
    finally:
        output = server.stop()
    [line] = [line for line in output.splitlines() if f"request_id={request_id}" in line]
    assert re.search(r" INFO kms_service\.access: GET transit/keys/:name 200 ", line), line
    assert f"accessor={accessor}" in line and "route=transit/keys/:name" in line and "status=200" in line
    assert token not in output


@pytest.mark.empty_database
def test_alembic_speaks_only_at_debug(database_url, data_dir):
    env = cli_env(database_url, data_dir)
    first = run_cli(["migrate"], env)  # a fresh database: every revision runs
    assert "alembic." not in first.stderr and "Running upgrade" not in first.stderr
    assert first.stderr == ""
    created = run_cli(["token", "create", "--policy", "root"], env)
    assert "alembic." not in created.stderr and "Running upgrade" not in created.stderr
    debug = run_cli(["migrate", "--log-level", "debug"], env)
    assert "alembic.runtime.migration" in debug.stderr
    as_json = run_cli(["migrate", "--log-level", "debug", "--log-format", "json"], env)
    lines = [json.loads(line) for line in as_json.stderr.splitlines() if line.strip()]
    assert any(line["logger"] == "alembic.runtime.migration" for line in lines)


def test_first_start_says_where_the_master_key_is_and_to_back_it_up(database_url, data_dir):
    env = cli_env(database_url, data_dir)
    server = ServeProcess(TEST_CONFIG, env)
    output = server.stop()
    path = data_dir / "master.key"
    assert path.exists()
    [warning] = [line for line in output.splitlines() if "created a new master key" in line]
    assert f"created a new master key at {path.resolve()}" in warning
    assert "Back it up" in warning and "KMS_MASTER_KEY" in warning
    assert f"master key: {path.resolve()}" in output  # the banner says which key is in use
    assert path.read_text().strip() not in output
    again = ServeProcess(TEST_CONFIG, env).stop()
    assert "created a new master key" not in again

    # Given in the environment (a container): no file, no warning, and the banner says where it came from.
    other_dir = data_dir.parent / "other"
    other_dir.mkdir()
    key = path.read_text().strip()
    from_env = ServeProcess(TEST_CONFIG, cli_env(database_url, other_dir, KMS_MASTER_KEY=key)).stop()
    assert "created a new master key" not in from_env and "master key: KMS_MASTER_KEY" in from_env
    assert not (other_dir / "master.key").exists() and key not in from_env


def test_serve_help_shows_every_kms_variable():
    result = run_cli(["serve", "--help"], cli_env("", Path("unused")))
    text = re.sub(r"\s+", " ", result.stdout)
    declared = {param.envvar for param in cli.serve.params if getattr(param, "envvar", None)}
    expected = {
        "KMS_CONFIG",
        "KMS_HOST",
        "KMS_PORT",
        "KMS_REAP_INTERVAL",
        "KMS_ROTATE_CHECK_INTERVAL",
        "KMS_MAX_BATCH_ITEMS",
        "KMS_CACHE_TTL",
        "KMS_ACCESS_LOG",
        "KMS_DATABASE_URL",
        "KMS_DATA_DIR",
        "KMS_LOG_FORMAT",
        "KMS_LOG_LEVEL",
    }
    assert expected <= declared  # and the listener's, TLS and token-TTL flags' variables (hardening)
    missing = [name for name in sorted(declared | {"KMS_MASTER_KEY"}) if name not in text]
    assert missing == []


def test_formatters_carry_fields_and_tracebacks():
    """The two formatters on real records: extra fields as JSON keys or key=value pairs, tracebacks kept."""
    import io
    import logging

    from kms_service import logs

    logger = logging.getLogger("kms_service.test_formatters")
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    for log_format in logs.FORMATS:
        stream = io.StringIO()
        logs.setup(log_format, "info", stream=stream)
        try:
            logger.debug("not at info")
            logger.info("hello %s", "there", extra={"request_id": "r-1", "route": "a b", "accessor": None})
            try:
                raise ValueError("boom")
            except ValueError:
                logger.exception("failed", extra={"request_id": "r-2"})
        finally:
            root.handlers[:], root.level = saved[0][:], saved[1]
        output = stream.getvalue()
        assert "not at info" not in output
        if log_format == "json":
            first, second = (json.loads(line) for line in output.splitlines())
            assert first["message"] == "hello there" and first["level"] == "info"
            assert first["request_id"] == "r-1" and first["route"] == "a b" and first["accessor"] is None
            assert second["request_id"] == "r-2" and "ValueError: boom" in second["exception"]
        else:
            lines = output.splitlines()
            assert lines[0].endswith('kms_service.test_formatters: hello there request_id=r-1 route="a b" accessor=-')
            assert "failed request_id=r-2" in lines[1] and "ValueError: boom" in output


def test_commands_other_than_serve_log_warnings_only_unless_asked(database_url, data_dir):
    """relationships and keys rotate print their result on stdout; stderr stays quiet at the default level,
    and --log-level info (or KMS_LOG_LEVEL) brings their INFO lines back."""
    env = cli_env(database_url, data_dir)
    ServeProcess(ROOT / "deploy" / "services.example.yaml", env).stop()
    relationships = ["relationships", "--config", str(ROOT / "deploy" / "services.example.yaml")]
    relationships += ["--app", str(ROOT / "deploy" / "app.example.yaml")]
    for args in (relationships, ["keys", "rotate", "vault-sign"]):  # relationships' first run issues a token
        quiet = run_cli(args, env)
        assert quiet.stdout.strip() and quiet.stderr == "", (args, quiet.stderr)
    rotate = ["keys", "rotate", "vault-sign"]
    assert " INFO " in run_cli([*rotate, "--log-level", "info"], env).stderr
    assert " INFO " in run_cli(rotate, {**env, "KMS_LOG_LEVEL": "info"}).stderr
