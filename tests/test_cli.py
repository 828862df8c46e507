"""The operator's and the platform's view: the real ``kms-service`` processes, the seed's shell lines
(curl, ``base64 --decode | jq -r``) verbatim, restarts, kills, expiry, and what the database holds."""

from __future__ import annotations

import asyncio
import base64
import json
import signal
import subprocess
import time
from pathlib import Path

import pytest
import requests
import yaml
from processes import ServeProcess, cli_env, run_cli, serve_exit

from kms_service.storage import migrate as migrations
from kms_service.storage.database import create_engine

ROOT = Path(__file__).resolve().parents[1]
SEED_CONFIG = ROOT / "deploy" / "services.example.yaml"
SEED_APP = ROOT / "deploy" / "app.example.yaml"
ENCRYPT_CONFIG = ROOT / "tests" / "data" / "encrypt-services.yaml"
ENCRYPT_APP = ROOT / "tests" / "data" / "encrypt-app.yaml"

# The seed's shell lines, as printed in its "Use Vault KMS" section (RELATIONSHIP_NAME = vault_secret).
# One correction: the seed's rotate line reads `"$KEY_NAME">/rotate`, a typo that redirects curl's output
# to a file named /rotate; the line below drops the stray '>'.
SEED_SIGN_SCRIPT = r"""
set -eu
echo $PLATFORM_RELATIONSHIPS | base64 --decode | jq -r ".vault_secret[0].password" > "$OUT/token"
VAULT_TOKEN=$(echo $PLATFORM_RELATIONSHIPS | base64 --decode | jq -r ".vault_secret[0].password")
VAULT_URL=$(echo $PLATFORM_RELATIONSHIPS | base64 --decode | jq -r ".vault_secret[0].host"):$(echo $PLATFORM_RELATIONSHIPS | base64 --decode | jq -r ".vault_secret[0].port")

curl \
  --header "X-Vault-Token: $VAULT_TOKEN" \
  http://"$VAULT_URL"/v1/transit/keys/"$KEY_NAME" | jq . > "$OUT/key"

curl \
  --header "X-Vault-Token: $VAULT_TOKEN" \
  http://"$VAULT_URL"/v1/transit/keys/"$KEY_NAME"/rotate \
  --request POST > "$OUT/rotate"

curl \
  --header "X-Vault-Token: $VAULT_TOKEN" \
  http://$VAULT_URL/v1/transit/sign/"$KEY_NAME"/sha2-512 \
  --data "{\"input\": \"$(echo SECRET | base64)\"}" > "$OUT/sign"

SIGNATURE=$(jq -r .data.signature "$OUT/sign")
curl \
  --header "X-Vault-Token: $VAULT_TOKEN" \
  http://"$VAULT_URL"/v1/transit/verify/"$KEY_NAME"/sha2-512 \
  --data "
{
  \"input\": \"$(echo SECRET | base64)\",
  \"signature\": \"$SIGNATURE\"
}" > "$OUT/verify"

curl \
  --header "X-Vault-Token: $VAULT_TOKEN" \
  http://"$VAULT_URL"/v1/transit/verify/"$KEY_NAME"/sha2-512 \
  --data "
{
  \"input\": \"$(echo OTHER | base64)\",
  \"signature\": \"$SIGNATURE\"
}" > "$OUT/verify-other"
"""

SEED_ENCRYPT_SCRIPT = r"""
set -eu
VAULT_TOKEN=$(echo $PLATFORM_RELATIONSHIPS | base64 --decode | jq -r ".vault_secret[0].password")
VAULT_URL=$(echo $PLATFORM_RELATIONSHIPS | base64 --decode | jq -r ".vault_secret[0].host"):$(echo $PLATFORM_RELATIONSHIPS | base64 --decode | jq -r ".vault_secret[0].port")

curl \
  --header "X-Vault-Token: $VAULT_TOKEN" \
  http://$VAULT_URL/v1/transit/encrypt/"$KEY_NAME" \
  --data "{\"plaintext\": \"$(echo SECRET | base64)\"}" > "$OUT/encrypt"

CIPHERTEXT=$(jq -r .data.ciphertext "$OUT/encrypt")
curl \
  --header "X-Vault-Token: $VAULT_TOKEN" \
  http://"$VAULT_URL"/v1/transit/decrypt/"$KEY_NAME" \
  --data "
{
  \"ciphertext\": \"$CIPHERTEXT\"
}" | jq -r ".data.plaintext" | base64 -d > "$OUT/plaintext"

curl \
  --header "X-Vault-Token: $VAULT_TOKEN" \
  http://"$VAULT_URL"/v1/transit/keys/"$KEY_NAME"/rotate \
  --request POST > "$OUT/rotate"

# The seed's rewrap example stores a Vault-prefixed ciphertext (vault:v1:...).
CIPHERTEXT=vault:${CIPHERTEXT#vault-kms:}
curl \
  --header "X-Vault-Token: $VAULT_TOKEN" \
  http://"$VAULT_URL"/v1/transit/rewrap/"$KEY_NAME" \
  --data "
{
  \"ciphertext\": \"$CIPHERTEXT\"
}" > "$OUT/rewrap"

CIPHERTEXT=$(jq -r .data.ciphertext "$OUT/rewrap")
curl \
  --header "X-Vault-Token: $VAULT_TOKEN" \
  http://"$VAULT_URL"/v1/transit/decrypt/"$KEY_NAME" \
  --data "
{
  \"ciphertext\": \"$CIPHERTEXT\"
}" | jq -r ".data.plaintext" | base64 -d > "$OUT/plaintext-rewrapped"
"""


def run_seed_script(script: str, relationships: str, key: str, out: Path) -> None:
    out.mkdir(exist_ok=True)
    env = {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "PLATFORM_RELATIONSHIPS": relationships,
        "KEY_NAME": key,
        "OUT": str(out),
    }
    result = subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


def relationships(config: Path, app: Path, env: dict[str, str], port: int) -> str:
    output = run_cli(["relationships", "--config", str(config), "--app", str(app), "--port", str(port)], env).stdout
    lines = output.strip().splitlines()
    assert len(lines) == 1, output  # one line of base64, nothing else on stdout
    return lines[0]


@pytest.fixture
def env(database_url, data_dir):
    return cli_env(database_url, data_dir)


def test_seed_sign_flow_with_the_seeds_own_shell_lines(env, tmp_path):
    server = ServeProcess(SEED_CONFIG, env)
    try:
        value = relationships(SEED_CONFIG, SEED_APP, env, server.port)
        decoded = json.loads(base64.b64decode(value))
        entry = decoded["vault_secret"][0]
        assert set(entry) == {
            "username",
            "scheme",
            "service",
            "fragment",
            "ip",
            "instance_ips",
            "hostname",
            "port",
            "cluster",
            "host",
            "rel",
            "path",
            "query",
            "password",
            "type",
            "public",
            "host_mapped",
        }
        assert entry["service"] == "vault-kms" and entry["rel"] == "manage_keys"
        assert entry["type"] == "vault-kms:1.12" and entry["scheme"] == "http" and entry["port"] == server.port
        assert entry["query"] == {"is_master": True} and entry["public"] is False

        out = tmp_path / "out"
        run_seed_script(SEED_SIGN_SCRIPT, value, "vault-sign", out)
        assert (out / "token").read_text().strip() == entry["password"]
        key = json.loads((out / "key").read_text())
        assert key["data"]["name"] == "vault-sign" and key["data"]["type"] == "ecdsa-p256"
        assert json.loads((out / "rotate").read_text())["data"]["latest_version"] == 2
        signed = json.loads((out / "sign").read_text())["data"]
        assert signed["key_version"] == 2 and signed["signature"].startswith("vault-kms:v2:")
        assert json.loads((out / "verify").read_text())["data"] == {"valid": True}
        assert json.loads((out / "verify-other").read_text())["data"] == {"valid": False}
    finally:
        server.stop()


def test_seed_encrypt_flow_with_the_seeds_own_shell_lines(env, tmp_path):
    server = ServeProcess(ENCRYPT_CONFIG, env)
    try:
        value = relationships(ENCRYPT_CONFIG, ENCRYPT_APP, env, server.port)
        out = tmp_path / "out"
        run_seed_script(SEED_ENCRYPT_SCRIPT, value, "app-data", out)
        assert json.loads((out / "encrypt").read_text())["data"]["ciphertext"].startswith("vault-kms:v1:")
        assert (out / "plaintext").read_text() == "SECRET\n"
        rewrapped = json.loads((out / "rewrap").read_text())["data"]
        assert rewrapped["key_version"] == 2 and rewrapped["ciphertext"].startswith("vault-kms:v2:")
        assert (out / "plaintext-rewrapped").read_text() == "SECRET\n"
    finally:
        server.stop()


def test_relationships_returns_the_same_token_and_supports_both_forms(env, start_server):
    start_server(ENCRYPT_CONFIG).stop()  # serve provisions the endpoints; relationships never does
    first = json.loads(base64.b64decode(relationships(ENCRYPT_CONFIG, ENCRYPT_APP, env, 8200)))
    second = json.loads(base64.b64decode(relationships(ENCRYPT_CONFIG, ENCRYPT_APP, env, 8200)))
    assert set(first) == {"vault_secret", "vault_manage", "vault_sign"}
    assert {name: e[0]["rel"] for name, e in first.items()} == {
        "vault_secret": "crypto",
        "vault_manage": "management",
        "vault_sign": "sign_and_verify",
    }
    for name in first:
        assert first[name][0]["password"] == second[name][0]["password"]
    tokens = {e[0]["password"] for e in first.values()}
    assert len(tokens) == 3  # one token per endpoint


def test_relationship_to_an_unknown_endpoint_is_a_clear_error(env, tmp_path):
    app = tmp_path / "app.yaml"
    app.write_text(yaml.safe_dump({"relationships": {"kms": "vault-kms:nope"}}))
    result = run_cli(["relationships", "--config", str(SEED_CONFIG), "--app", str(app)], env, check=False)
    assert result.returncode != 0
    assert "relationships.kms names endpoint 'nope'" in result.stderr


def test_restart_keeps_keys_versions_and_tokens(env):
    server = ServeProcess(ENCRYPT_CONFIG, env)
    value = relationships(ENCRYPT_CONFIG, ENCRYPT_APP, env, server.port)
    token = json.loads(base64.b64decode(value))["vault_secret"][0]["password"]
    headers = {"X-Vault-Token": token}
    requests.post(f"{server.url}/v1/transit/keys/app-data/rotate", headers=headers, timeout=10).raise_for_status()
    ciphertext = requests.post(
        f"{server.url}/v1/transit/encrypt/app-data", headers=headers, json={"plaintext": "U0VDUkVU"}, timeout=10
    ).json()["data"]["ciphertext"]
    before = requests.get(f"{server.url}/v1/transit/keys/app-data", headers=headers, timeout=10).json()["data"]
    server.stop()

    server = ServeProcess(ENCRYPT_CONFIG, env)
    try:
        after = requests.get(f"{server.url}/v1/transit/keys/app-data", headers=headers, timeout=10).json()["data"]
        assert after == before and after["latest_version"] == 2
        plain = requests.post(
            f"{server.url}/v1/transit/decrypt/app-data", headers=headers, json={"ciphertext": ciphertext}, timeout=10
        )
        assert plain.json()["data"]["plaintext"] == "U0VDUkVU"
        assert (
            json.loads(base64.b64decode(relationships(ENCRYPT_CONFIG, ENCRYPT_APP, env, server.port)))["vault_secret"][
                0
            ]["password"]
            == token
        )
    finally:
        server.stop()


def test_sigkill_loses_no_acknowledged_rotation(env):
    server = ServeProcess(ENCRYPT_CONFIG, env)
    token = json.loads(base64.b64decode(relationships(ENCRYPT_CONFIG, ENCRYPT_APP, env, server.port)))["vault_secret"][
        0
    ]["password"]
    headers = {"X-Vault-Token": token}
    acknowledged = 0
    for _ in range(5):
        response = requests.post(f"{server.url}/v1/transit/keys/app-data/rotate", headers=headers, timeout=10)
        assert response.status_code == 200
        acknowledged = response.json()["data"]["latest_version"]
    server.stop(signal.SIGKILL)

    server = ServeProcess(ENCRYPT_CONFIG, env)
    try:
        key = requests.get(f"{server.url}/v1/transit/keys/app-data", headers=headers, timeout=10).json()["data"]
        assert key["latest_version"] == acknowledged == 6
        assert sorted(key["keys"], key=int) == [str(v) for v in range(1, 7)]
    finally:
        server.stop()


def test_changing_a_keys_type_is_refused_at_start(env, tmp_path):
    server = ServeProcess(SEED_CONFIG, env)
    server.stop()
    changed = tmp_path / "services.yaml"
    changed.write_text(SEED_CONFIG.read_text().replace("type: sign", "type: encrypt"))
    result = serve_exit(changed, env)
    assert result.returncode != 0
    assert "key 'vault-sign' already exists with type 'sign'" in result.stderr
    assert "can never change" in result.stderr


def test_a_new_key_and_endpoint_in_the_config_are_added_on_restart(env, tmp_path):
    server = ServeProcess(SEED_CONFIG, env)
    server.stop()
    grown = tmp_path / "services.yaml"
    document = yaml.safe_load(SEED_CONFIG.read_text())
    document["vault-kms"]["configuration"]["endpoints"]["crypto"] = [
        {"policy": "encrypt", "key": "new-key", "type": "encrypt"}
    ]
    grown.write_text(yaml.safe_dump(document))
    server = ServeProcess(grown, env)
    try:
        result = run_cli(["token", "create", "--policy", "root", "--ttl", "1h"], env)
        root = result.stdout.strip().splitlines()[-1]
        names = requests.get(f"{server.url}/v1/transit/keys?list=true", headers={"X-Vault-Token": root}, timeout=10)
        assert names.json()["data"]["keys"] == ["new-key", "vault-sign"]
    finally:
        server.stop()


def test_wrong_master_key_is_refused(database_url, data_dir):
    good = base64.b64encode(b"\x01" * 32).decode()
    bad = base64.b64encode(b"\x02" * 32).decode()
    server = ServeProcess(SEED_CONFIG, cli_env(database_url, data_dir, KMS_MASTER_KEY=good))
    server.stop()
    result = serve_exit(SEED_CONFIG, cli_env(database_url, data_dir, KMS_MASTER_KEY=bad))
    assert result.returncode != 0
    assert "does not open this database" in result.stderr
    garbage = serve_exit(SEED_CONFIG, cli_env(database_url, data_dir, KMS_MASTER_KEY="not base64!"))
    assert garbage.returncode != 0 and "KMS_MASTER_KEY is not valid base64" in garbage.stderr
    assert "not base64!" not in garbage.stderr.replace("KMS_MASTER_KEY is not valid base64", "")


def test_master_key_file_is_created_private(env, data_dir):
    run_cli(["migrate"], env)
    run_cli(["token", "create", "--policy", "root"], env)  # a command that writes creates the key
    key_file = data_dir / "master.key"
    assert key_file.exists()
    assert key_file.stat().st_mode & 0o777 == 0o600
    if env["KMS_DATABASE_URL"].startswith("sqlite"):
        database = Path(env["KMS_DATABASE_URL"].removeprefix("sqlite:///"))
        assert database.stat().st_mode & 0o777 == 0o600


def test_token_cli_create_list_revoke(env):
    server = ServeProcess(SEED_CONFIG, env)
    try:
        created = (
            run_cli(
                ["token", "create", "--policy", "admin:vault-sign", "--policy", "sign:vault-sign", "--ttl", "1h"], env
            )
            .stdout.strip()
            .splitlines()
        )
        token = created[-1]
        accessor = created[0].split(":", 1)[1].strip()
        url = f"{server.url}/v1/transit/keys/vault-sign"
        assert requests.get(url, headers={"X-Vault-Token": token}, timeout=10).status_code == 200
        me = requests.get(f"{server.url}/v1/auth/token/lookup-self", headers={"X-Vault-Token": token}, timeout=10)
        assert me.json()["data"]["policies"] == ["admin:vault-sign", "default", "sign:vault-sign"]
        assert 3500 < me.json()["data"]["ttl"] <= 3600

        listing = run_cli(["token", "list"], env).stdout
        assert accessor in listing and token not in listing
        assert "admin:vault-sign, default, sign:vault-sign" in listing

        assert run_cli(["token", "revoke", accessor], env).stdout.strip() == "revoked"
        deadline = time.monotonic() + 10  # the server's token cache lives at most --cache-ttl (5 s)
        while requests.get(url, headers={"X-Vault-Token": token}, timeout=10).status_code != 403:
            assert time.monotonic() < deadline, "revoked token still accepted"
            time.sleep(0.2)
        assert run_cli(["token", "revoke", accessor], env, check=False).returncode != 0
    finally:
        server.stop()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--policy", "superuser"], "unknown policy"),
        (["--policy", "encrypt:bad key"], "invalid key name"),
        (["--policy", "root", "--ttl", "1 day"], "invalid duration"),
        (["--policy", "root", "--ttl", "١h"], "invalid duration"),
    ],
)
def test_token_create_rejects_bad_arguments(env, args, message):
    run_cli(["migrate"], env)  # token create needs a database (only serve and migrate make one)
    result = run_cli(["token", "create", *args], env, check=False)
    assert result.returncode != 0
    assert message in result.stderr


def test_expired_token_is_refused_then_reaped(env):
    server = ServeProcess(SEED_CONFIG, env, "--reap-interval", "0.5")
    try:
        token = run_cli(["token", "create", "--policy", "admin:vault-sign", "--ttl", "3s"], env).stdout.split()[-1]
        url = f"{server.url}/v1/transit/keys/vault-sign"
        assert requests.get(url, headers={"X-Vault-Token": token}, timeout=10).status_code == 200
        time.sleep(3.2)
        response = requests.get(url, headers={"X-Vault-Token": token}, timeout=10)
        assert response.status_code == 403 and response.json() == {"errors": ["permission denied"]}
        deadline = time.monotonic() + 10
        while "admin:vault-sign" in run_cli(["token", "list"], env).stdout:
            assert time.monotonic() < deadline, "expired token row was never reaped"
            time.sleep(0.5)
    finally:
        server.stop()


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda d: d.update({"db": {"type": "postgresql:15"}}) or d.pop("vault-kms"), "no service of type"),
        (lambda d: d["vault-kms"].update(type="vault-kms:9.9"), "unsupported version"),
        (lambda d: d["vault-kms"].update(type="vault-kms:latest"), "expected 'vault-kms:<major>.<minor>'"),
        (
            lambda d: d["vault-kms"]["configuration"]["endpoints"]["manage_keys"][0].update(policy="owner"),
            "endpoints.manage_keys[0].policy: unknown policy",
        ),
        (
            lambda d: d["vault-kms"]["configuration"]["endpoints"]["manage_keys"][1].update(key="bad key"),
            "endpoints.manage_keys[1].key: invalid key name",
        ),
        (
            lambda d: d["vault-kms"]["configuration"]["endpoints"]["manage_keys"][2].update(type="encrypt"),
            "key 'vault-sign' is given type 'encrypt' here but 'sign'",
        ),
    ],
    ids=["not-vault-kms", "bad-version", "bad-type", "unknown-policy", "bad-key-name", "conflicting-types"],
)
def test_config_errors_name_the_place(env, tmp_path, mutate, message):
    document = yaml.safe_load(SEED_CONFIG.read_text())
    mutate(document)
    config = tmp_path / "services.yaml"
    config.write_text(yaml.safe_dump(document))
    result = serve_exit(config, env)
    assert result.returncode != 0
    assert message in result.stderr


@pytest.mark.empty_database
def test_commands_that_only_read_create_and_migrate_nothing(tmp_path, database_url, data_dir):
    # A mistyped --data-dir: one clear line, and no empty database or new master key left behind.
    missing = tmp_path / "no-such-dir"
    result = run_cli(["token", "list", "--data-dir", str(missing)], cli_env("", missing), check=False)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "no database at" in result.stderr
    assert not missing.exists()

    # A database at an older schema revision is not migrated by a read.
    async def migrate_to(revision: str) -> None:
        engine = create_engine(database_url)
        try:
            await migrations.upgrade(engine, revision)
        finally:
            await engine.dispose()

    asyncio.run(migrate_to("0007"))
    env = cli_env(database_url, data_dir)
    result = run_cli(["token", "list"], env, check=False)
    assert result.returncode == 1 and "run 'kms-service migrate' first" in result.stderr
    assert "Traceback" not in result.stderr

    # At the newest revision it reads, without needing (or creating) the master key.
    run_cli(["migrate"], env)
    assert run_cli(["token", "list"], env).stdout.startswith("accessor")
    assert not (data_dir / "master.key").exists()


def test_policy_cli_write_read_list_delete(env, tmp_path):
    run_cli(["migrate"], env)
    document = tmp_path / "ops.hcl"
    document.write_text('path "transit/keys/*" {\n  capabilities = ["read"]\n}\n')
    assert "Uploaded policy: ops" in run_cli(["policy", "write", "ops", str(document)], env).stdout
    assert run_cli(["policy", "read", "ops"], env).stdout.strip() == document.read_text().strip()
    assert "ops" in run_cli(["policy", "list"], env).stdout.split()
    created = run_cli(["token", "create", "--policy", "ops"], env)  # a written policy may be given to tokens
    assert created.stdout.strip().splitlines()[-1].startswith("kms.")
    bad = tmp_path / "bad.hcl"
    bad.write_text('path "x" { capabilities = ["fly"] }')
    refused = run_cli(["policy", "write", "bad", str(bad)], env, check=False)
    assert refused.returncode == 1 and "failed to parse policy" in refused.stderr and "Traceback" not in refused.stderr
    refused = run_cli(["policy", "delete", "root"], env, check=False)
    assert refused.returncode == 1 and "root" in refused.stderr
    run_cli(["policy", "delete", "ops"], env)
    assert "ops" not in run_cli(["policy", "list"], env).stdout.split()
