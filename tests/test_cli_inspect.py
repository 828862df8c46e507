"""``kms-service keys list|show``, ``endpoints list`` and ``inspect``: the real command on a database a real
server wrote, as tables and as JSON, on SQLite and PostgreSQL; and they only read (no migration, no master
key, and on PostgreSQL a role that may read the views alone is enough)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import uuid
from pathlib import Path

import asyncpg
import pytest
import requests
from processes import ServeProcess, cli_env, run_cli
from sqlalchemy.engine import make_url

from kms_service.storage import migrate as migrations
from kms_service.storage.database import create_engine, normalize_database_url

ROOT = Path(__file__).resolve().parents[1]
TEST_CONFIG = ROOT / "tests" / "data" / "services.yaml"
CRYPTO_GRANTS = {"admin:vault-enc", "encrypt:vault-enc", "decrypt:vault-enc", "rewrap:vault-enc"}


def created_token(env: dict[str, str], *args: str) -> tuple[str, str]:
    run_cli(["migrate"], env)  # only serve and migrate create a database (token create refuses to)
    lines = run_cli(["token", "create", *args], env).stdout.strip().splitlines()
    return lines[-1], next(line.split()[-1] for line in lines if line.startswith("accessor:"))


def as_json(env: dict[str, str], *args: str):
    return json.loads(run_cli([*args, "--json"], env).stdout)


def written(env: dict[str, str], tmp_path: Path) -> dict[str, str]:
    """A database as a running service leaves it: provisioned, one key rotated, an endpoint token issued,
    operator tokens of several lifetimes. Returns the tokens and accessors by role."""
    root, root_accessor = created_token(env, "--policy", "root", "--ttl", "1h")
    server = ServeProcess(TEST_CONFIG, env)
    try:
        rotated = requests.post(
            f"{server.url}/v1/transit/keys/vault-enc/rotate", headers={"X-Vault-Token": root}, timeout=30
        )
        assert rotated.status_code == 200
    finally:
        server.stop()
    app = tmp_path / "app.yaml"
    app.write_text('relationships:\n    signing: "kms:signer"\n')
    relationships = run_cli(["relationships", "--config", str(TEST_CONFIG), "--app", str(app)], env).stdout
    encrypter, encrypter_accessor = created_token(env, "--policy", "encrypt:vault-enc", "--ttl", "60d")
    signer_accessor = next(
        line.split()[0] for line in run_cli(["token", "list"], env).stdout.splitlines() if "signer" in line
    )
    return {
        "root": root,
        "root_accessor": root_accessor,
        "encrypter": encrypter,
        "encrypter_accessor": encrypter_accessor,
        "relationships": relationships.strip(),
        "signer_accessor": signer_accessor,
    }


def test_keys_endpoints_and_inspect_as_json_and_as_tables(database_url, data_dir, tmp_path):
    env = cli_env(database_url, data_dir, COLUMNS="200")
    made = written(env, tmp_path)

    keys = as_json(env, "keys", "list")
    assert [(k["name"], k["type"], k["latest_version"], k["version_count"]) for k in keys] == [
        ("vault-enc", "chacha20-poly1305", 2, 2),
        ("vault-sign", "ecdsa-p256", 1, 1),
    ]
    assert keys[0]["last_rotated_at"] is not None and keys[1]["last_rotated_at"] is None
    assert keys[0]["created_at"].endswith("+00:00") and keys[0]["exportable"] is False

    shown = as_json(env, "keys", "show", "vault-enc")
    assert shown["key"]["name"] == "vault-enc"
    assert [(v["version"], v["is_latest"], v["decrypts"]) for v in shown["versions"]] == [
        (1, False, True),
        (2, True, True),
    ]
    grants = {(g["endpoint"], g["policy_name"]) for g in shown["grants"]}
    assert {name for endpoint, name in grants if endpoint == "crypto"} == CRYPTO_GRANTS
    assert ("encrypter", "encrypt:vault-enc") in grants and not any("vault-sign" in name for _, name in grants)
    assert [t["accessor"] for t in shown["tokens"]] == [made["encrypter_accessor"]]

    missing = run_cli(["keys", "show", "no-such-key"], env, check=False)
    assert (
        missing.returncode == 1 and "no key named no-such-key" in missing.stderr and "Traceback" not in missing.stderr
    )

    endpoints = {e["endpoint"]: e for e in as_json(env, "endpoints", "list")}
    assert set(endpoints) == {
        "manage_keys",
        "crypto",
        "admin_sign",
        "admin_enc",
        "signer",
        "verifier",
        "encrypter",
        "decrypter",
        "rewrapper",
    }
    assert {g["policy_name"] for g in endpoints["crypto"]["grants"]} == CRYPTO_GRANTS
    assert endpoints["signer"]["token_accessor"] == made["signer_accessor"]
    assert endpoints["signer"]["token_expires_in_days"] in (364, 365) and endpoints["signer"]["token_count"] == 1
    assert endpoints["verifier"]["token_accessor"] is None and endpoints["verifier"]["token_count"] == 0

    inspected = as_json(env, "inspect")
    assert inspected["expiring_within_days"] == 30
    assert [k["name"] for k in inspected["keys"]] == ["vault-enc", "vault-sign"]
    assert [(v["key_name"], v["version"]) for v in inspected["versions"]] == [
        ("vault-enc", 1),
        ("vault-enc", 2),
        ("vault-sign", 1),
    ]
    assert [t["accessor"] for t in inspected["expiring_tokens"]] == [made["root_accessor"]]
    assert inspected["tokens_total"] == 3
    later = as_json(env, "inspect", "--days", "90")
    assert [t["accessor"] for t in later["expiring_tokens"]] == [made["root_accessor"], made["encrypter_accessor"]]

    tables = {
        "keys list": run_cli(["keys", "list"], env).stdout,
        "keys show": run_cli(["keys", "show", "vault-enc"], env).stdout,
        "endpoints list": run_cli(["endpoints", "list"], env).stdout,
        "inspect": run_cli(["inspect"], env).stdout,
    }
    assert "vault-enc" in tables["keys list"] and "chacha20-poly1305" in tables["keys list"]
    assert "never" in tables["keys list"]  # vault-sign was never rotated
    assert "encrypt:vault-enc" in tables["keys show"] and made["encrypter_accessor"] in tables["keys show"]
    assert made["signer_accessor"] in tables["endpoints list"] and "none yet" in tables["endpoints list"]
    assert "2 key(s), 3 version(s), 9 endpoint(s), 3 token(s)" in tables["inspect"]
    assert "tokens expiring within 30 days" in tables["inspect"] and made["root_accessor"] in tables["inspect"]

    outputs = "\n".join([*tables.values(), json.dumps([keys, shown, list(endpoints.values()), inspected])])
    for secret in ("root", "encrypter", "relationships"):
        assert made[secret] not in outputs, secret


def _revision(database_url: str) -> str | None:
    async def current() -> str | None:
        engine = create_engine(database_url, create=False)
        try:
            async with engine.connect() as conn:
                return (await conn.exec_driver_sql("SELECT version_num FROM alembic_version")).scalar()
        finally:
            await engine.dispose()

    return asyncio.run(current())


COMMANDS = (["keys", "list"], ["keys", "show", "vault-sign"], ["endpoints", "list"], ["inspect"])


@pytest.mark.empty_database
def test_they_only_read(database_url, data_dir, tmp_path):
    missing = tmp_path / "no-such-dir"
    for command in COMMANDS:
        result = run_cli([*command, "--data-dir", str(missing)], cli_env("", missing), check=False)
        assert result.returncode == 1 and "no database at" in result.stderr and "Traceback" not in result.stderr
    assert not missing.exists()

    async def migrate_to(revision: str) -> None:
        engine = create_engine(database_url)
        try:
            await migrations.upgrade(engine, revision)
        finally:
            await engine.dispose()

    asyncio.run(migrate_to("0019"))  # a database from before the views
    env = cli_env(database_url, data_dir)
    for command in COMMANDS:
        result = run_cli(command, env, check=False)
        assert result.returncode == 1 and "run 'kms-service migrate' first" in result.stderr, result.stderr
    assert _revision(database_url) == "0019"  # not migrated by a read

    # A real service writes the database, then the commands read it without the master key.
    server = ServeProcess(TEST_CONFIG, env)
    server.stop()
    (data_dir / "master.key").rename(tmp_path / "master.key.elsewhere")
    if database_url.startswith("sqlite"):
        db_file = Path(database_url.removeprefix("sqlite:///"))
        before = hashlib.sha256(db_file.read_bytes()).hexdigest()
    for command in COMMANDS:
        assert run_cli(command, env).stdout
    assert not (data_dir / "master.key").exists()
    if database_url.startswith("sqlite"):
        assert hashlib.sha256(db_file.read_bytes()).hexdigest() == before
        return

    # PostgreSQL: a role that may read the views and alembic_version, and nothing else, is enough.
    role = f"kms_reader_{uuid.uuid4().hex[:8]}"
    admin_url = normalize_database_url(database_url).replace("postgresql+asyncpg", "postgresql")
    objects = "kms_keys, kms_key_versions, kms_tokens, kms_endpoints, alembic_version"

    async def admin(*statements: str) -> None:
        conn = await asyncpg.connect(admin_url)
        try:
            for statement in statements:
                await conn.execute(statement)
        finally:
            await conn.close()

    asyncio.run(admin(f"CREATE ROLE {role} LOGIN", f"GRANT SELECT ON {objects} TO {role}"))
    try:
        reader_url = make_url(database_url).set(username=role, password=None).render_as_string(hide_password=False)
        reader_env = cli_env(reader_url, data_dir)
        for command in COMMANDS:
            assert run_cli(command, reader_env).stdout
        assert [k["name"] for k in as_json(reader_env, "keys", "list")] == ["vault-enc", "vault-sign"]
    finally:
        asyncio.run(admin(f"REVOKE ALL ON {objects} FROM {role}", f"DROP ROLE {role}"))


def test_keys_list_and_show_name_each_keys_mount(start_server, database_url, data_dir):
    """The same key name in two mounts: keys list shows both with their mount; keys show --mount picks one."""
    server = start_server()
    client = server.client(server.root_token())
    client.sys.enable_secrets_engine("transit", path="teams/eu")
    client.secrets.transit.create_key("vault-enc", key_type="aes256-gcm96", mount_point="teams/eu")
    env = cli_env(database_url, data_dir)
    listed = {(row["mount"], row["name"]): row["type"] for row in as_json(env, "keys", "list")}
    assert listed[("transit", "vault-enc")] == "chacha20-poly1305"
    assert listed[("teams/eu", "vault-enc")] == "aes256-gcm96"
    shown = as_json(env, "keys", "show", "vault-enc", "--mount", "teams/eu/")
    assert shown["key"]["type"] == "aes256-gcm96" and shown["grants"] == [] and shown["tokens"] == []
    assert [v["version"] for v in shown["versions"]] == [1]
    assert as_json(env, "keys", "show", "vault-enc")["key"]["type"] == "chacha20-poly1305"
    table = run_cli(["keys", "list"], env).stdout
    assert "teams/eu/" in table and "transit/" in table
    missing = run_cli(["keys", "show", "vault-enc", "--mount", "nowhere"], env, check=False)
    assert missing.returncode == 1 and "no key named vault-enc in nowhere/" in missing.stderr


def test_keys_show_gives_each_versions_usage(start_server, database_url, data_dir):
    """The usage counters (issue 12) in the keys view: encryptions and signatures per version, last use."""
    server = start_server()
    client = server.client(server.root_token())
    for _ in range(3):
        client.secrets.transit.encrypt_data("vault-enc", "aGVsbG8=")
    client.secrets.transit.sign_data("vault-sign", "aGVsbG8=")
    server.stop()  # a clean stop gives back unused reservations: the stored counts are exact
    env = cli_env(database_url, data_dir)
    versions = as_json(env, "keys", "show", "vault-enc")["versions"]
    assert [(v["version"], v["encryptions"], v["signatures"]) for v in versions] == [(1, 3, 0)]
    assert versions[0]["last_used_at"]
    signed = as_json(env, "keys", "show", "vault-sign")["versions"][0]
    assert (signed["encryptions"], signed["signatures"]) == (0, 1)
    assert "encryptions" in run_cli(["keys", "show", "vault-enc"], env).stdout
