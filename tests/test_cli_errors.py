"""Errors, not tracebacks: every CLI failure a user can cause is one line on stderr and a non-zero exit;
a missing master key for an existing database is never replaced; commands other than serve and migrate
never create a database; loose file permissions are reported; token TTLs have a maximum; and at runtime a
database that goes away is a 503 in Vault's envelope with one log line."""

from __future__ import annotations

import base64
import os
import subprocess
import time
import uuid
from pathlib import Path

import pytest
import requests
from private_postgres import PrivatePostgres
from processes import COMMAND, ServeProcess, cli_env, free_port, run_cli, serve_exit
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "tests" / "data" / "services.yaml"


def _one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode != 0, result.stdout
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: "), lines[0]
    return lines[0]


@pytest.fixture
def env(database_url, data_dir):
    return cli_env(database_url, data_dir)


@pytest.fixture
def provisioned(env, start_server):
    """A database made by the service as serve starts it (so it is sealed under data_dir's master.key)."""
    start_server(CONFIG).stop()
    return env


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["token", "create", "--policy", "root", "--ttl", "8761h"], "--ttl: longer than the maximum token TTL"),
        (["token", "create", "--policy", "root", "--ttl", "99999999999999h"], "--ttl: invalid duration"),
        (["token", "create", "--policy", "root", "--ttl", "2h", "--max-token-ttl", "1h"], "longer than the maximum"),
        (["token", "create", "--bogus"], "No such option '--bogus'"),
        (["token", "list", "--database-url", "postgresql://u@h:port/db"], "its port is not a number"),
        (["token", "list", "--database-url", "mysql://u@h/db"], "unsupported database 'mysql'"),
        (["token", "list", "--database-url", "::"], "invalid database URL"),
        (["serve", "--config", "/no/such/services.yaml"], "/no/such/services.yaml: cannot read"),
        (["config", "check", "/no/such/services.yaml"], "/no/such/services.yaml: cannot read"),
        (["serve"], "Missing option '--config'"),
    ],
    ids=[
        "ttl-over-max",
        "ttl-out-of-range",
        "ttl-over-set-max",
        "bad-flag",
        "url-port",
        "url-backend",
        "url",
        "serve-no-config",
        "check-no-config",
        "serve-no-flag",
    ],
)
def test_usage_errors_are_one_line(provisioned, args, message):
    assert message in _one_line_error(run_cli(args, provisioned, check=False))


def test_unreachable_database_is_one_line(tmp_path):
    env = cli_env(f"postgresql://postgres@127.0.0.1:{free_port()}/nothing", tmp_path)
    for args in (["token", "create", "--policy", "root"], ["token", "list"], ["migrate"]):
        line = _one_line_error(run_cli(args, env, check=False))
        assert line.startswith("Error: database unavailable: "), line


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_database_refusals_are_one_line_in_the_services_words(database_url, tmp_path):
    """A PostgreSQL database that does not exist, a role it does not know, a SQLite path that cannot be made:
    one line each that says what to check, never the driver's or SQLAlchemy's text."""
    server = make_url(database_url)
    missing_database = server.set(database=f"no_such_database_{uuid.uuid4().hex[:8]}")
    unknown_role = server.set(username=f"no_such_role_{uuid.uuid4().hex[:8]}", password=None)
    parent_is_a_file = tmp_path / "a-file"
    parent_is_a_file.write_text("")
    cases = [
        (missing_database, "PostgreSQL has no such database"),
        (unknown_role, "PostgreSQL refused the login"),
    ]
    for url, words in cases:
        env = cli_env(url.render_as_string(hide_password=False), tmp_path)
        for args in (["keys", "list"], ["token", "list"], ["token", "create", "--policy", "root"], ["migrate"]):
            line = _one_line_error(run_cli(args, env, check=False))
            assert words in line and "check --database-url" in line, line
            assert not any(noise in line for noise in ("sqlalchemy", "asyncpg", "DBAPIError")), line
    env = cli_env(f"sqlite:///{parent_is_a_file}/kms.db", tmp_path)
    line = _one_line_error(run_cli(["migrate"], env, check=False))
    assert (
        line
        == f"Error: cannot create the SQLite database {parent_is_a_file}/kms.db: {parent_is_a_file} is not a directory"
    )


def test_master_key_faults_are_one_line_and_a_lost_key_is_never_replaced(provisioned, data_dir):
    key_file = data_dir / "master.key"
    original = key_file.read_bytes()
    create = ["token", "create", "--policy", "root"]

    key_file.unlink()
    line = _one_line_error(run_cli(create, provisioned, check=False))
    # A lost key and a wrong --data-dir read alike here: the line names the directory and says both.
    where = f"no master.key in {data_dir.absolute()} (KMS_MASTER_KEY is unset)"
    assert line.startswith(f"Error: {where}") and "is sealed with master key id" in line, line
    assert f"if the database is {data_dir.absolute()}'s, restore its master.key from your backup" in line
    assert "if you meant another --data-dir, pass it" in line
    assert not key_file.exists()  # no new key
    line = _one_line_error(serve_exit(CONFIG, provisioned))
    assert where in line and "if you meant another --data-dir" in line and not key_file.exists()

    key_file.write_bytes(os.urandom(44))
    key_file.chmod(0o600)
    assert "is not valid base64" in _one_line_error(run_cli(create, provisioned, check=False))

    key_file.write_text(base64.b64encode(os.urandom(32)).decode() + "\n")
    assert "does not open this database" in _one_line_error(run_cli(create, provisioned, check=False))

    key_file.write_bytes(original)
    assert run_cli(create, provisioned).stdout.strip()


@pytest.mark.postgresql
@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)  # SQLite's file moves with the directory
def test_a_relative_data_dir_from_another_directory_is_told_apart_from_a_lost_key(provisioned, data_dir, tmp_path):
    """The database is found (PostgreSQL's URL), its key is not: the relative ``data`` was taken from the
    directory the command ran in. The line names that directory and says to pass another --data-dir."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in provisioned.items() if k != "KMS_DATA_DIR"}
    args = ["token", "create", "--policy", "root", "--data-dir", "data"]
    line = _one_line_error(run_cli(args, env, check=False, command=COMMAND, cwd=elsewhere))
    assert f"no master.key in {elsewhere / 'data'} " in line and "if you meant another --data-dir, pass it" in line
    assert not (elsewhere / "data" / "master.key").exists() and (data_dir / "master.key").exists()
    # The same command with the directory that holds the key works from anywhere.
    assert run_cli([*args[:-1], str(data_dir)], env, command=COMMAND, cwd=elsewhere).stdout.strip()


@pytest.mark.parametrize(
    "args",
    [
        ["token", "create", "--policy", "root"],
        ["token", "revoke", "0123456789abcdef01234567"],
        ["policy", "delete", "p"],
        ["token", "list"],
    ],
    ids=["token-create", "token-revoke", "policy-delete", "token-list"],
)
def test_a_data_dir_without_a_database_is_refused_and_nothing_is_created(tmp_path, args):
    missing = tmp_path / "mistyped"
    line = _one_line_error(run_cli([*args, "--data-dir", str(missing)], cli_env("", missing), check=False))
    assert "no database at" in line or "no kms-service database at" in line
    assert not missing.exists()


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
@pytest.mark.empty_database
def test_an_empty_postgresql_database_is_refused_by_commands_that_need_one(database_url, data_dir):
    # (SQLite: the file is the database; the test above.)
    env = cli_env(database_url, data_dir)
    line = _one_line_error(run_cli(["token", "create", "--policy", "root"], env, check=False))
    assert "no kms-service database at" in line and "only 'serve' and 'migrate' create one" in line
    assert not (data_dir / "master.key").exists()
    run_cli(["migrate"], env)  # migrate creates
    assert run_cli(["token", "create", "--policy", "root"], env).stdout.strip()


def test_loose_permissions_warn_and_strict_permissions_refuse(provisioned, data_dir, database_url):
    (data_dir / "master.key").chmod(0o640)
    server = ServeProcess(CONFIG, provisioned)
    output = server.stop()
    assert f"{data_dir / 'master.key'}: readable or writable by group or others" in output
    line = _one_line_error(serve_exit_with(provisioned, "--strict-permissions"))
    assert "master.key" in line and "--strict-permissions" in line
    (data_dir / "master.key").chmod(0o600)
    if database_url.startswith("sqlite"):
        database = Path(database_url.removeprefix("sqlite:///"))
        database.chmod(0o644)
        line = _one_line_error(serve_exit_with(provisioned, "--strict-permissions"))
        assert str(database) in line
        for path in database.parent.glob(database.name + "*"):  # SQLite's -wal and -shm copy the file's mode
            path.chmod(0o600)
    server = ServeProcess(CONFIG, provisioned, "--strict-permissions")
    assert "readable or writable by group" not in server.stop()


def serve_exit_with(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return run_cli(["serve", "--config", str(CONFIG), "--port", str(free_port()), *args], env, check=False)


def test_token_ttls_over_http_are_capped(start_server):
    server = start_server(max_token_ttl=3600)
    client = server.client(server.root_token())
    for asked in ("2h", None):
        reply = client.auth.token.create(policies=["encrypt:vault-enc"], ttl=asked)
        assert reply["auth"]["lease_duration"] == 3600, reply
        if asked:
            assert reply["warnings"] == [
                'TTL of "2h" exceeded the effective max_ttl of "1h"; TTL value is capped accordingly'
            ]
    reply = client.auth.token.create(policies=["encrypt:vault-enc"], ttl="10m", explicit_max_ttl="3h")
    assert reply["auth"]["lease_duration"] == 600
    assert reply["warnings"] == ["explicit_max_ttl of 10800s exceeds the maximum of 3600s; capped"]
    renewed = client.auth.token.renew(reply["auth"]["client_token"], increment="5h")
    assert renewed["auth"]["lease_duration"] <= 3600


# -- a database that goes away at runtime: our own PostgreSQL cluster, on its own port ----------------------


def test_database_down_at_runtime_is_a_503_with_one_log_line(tmp_path):
    cluster = PrivatePostgres()
    try:
        cluster.start()
        env = cli_env(cluster.url, tmp_path)
        server = ServeProcess(CONFIG, env)
        try:
            token = run_cli(["token", "create", "--policy", "root", "--ttl", "1h"], env).stdout.strip().splitlines()[-1]
            headers = {"X-Vault-Token": token}
            encrypt = f"{server.url}/v1/transit/encrypt/vault-enc"
            body = {"plaintext": base64.b64encode(b"x").decode()}
            assert requests.post(encrypt, json=body, headers=headers, timeout=10).status_code == 200
            cluster.stop()
            statuses = []
            for i in range(20):
                response = requests.post(f"{server.url}/v1/transit/keys/new-{i}", headers=headers, timeout=30)
                statuses.append((response.status_code, response.json()))
            assert statuses == [(503, {"errors": ["database unavailable"]})] * 20
            # The warm crypto path needs no database.
            assert requests.post(encrypt, json=body, headers=headers, timeout=10).status_code == 200
            cluster.start()
            deadline = time.monotonic() + 20
            while True:
                back = requests.post(f"{server.url}/v1/transit/keys/back", headers=headers, timeout=30)
                if back.status_code != 503:
                    break
                assert time.monotonic() < deadline, "the server did not recover once the database was back"
                time.sleep(0.5)
            assert back.status_code == 200, back.text
        finally:
            output = server.stop()
        # One line says the database is gone (whoever noticed first: a request, or the change listener), and
        # at most one more (rate-limited) from a request that met it: never a line per request.
        lines = output.splitlines()
        assert len([line for line in lines if "lost the database" in line]) == 1, output[-3000:]
        assert len([line for line in lines if "database unavailable" in line]) <= 1, output[-3000:]
        assert "Traceback" not in output
    finally:
        cluster.remove()
