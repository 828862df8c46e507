"""A database written by the previous release (the commit below, run as its own process) upgrades in place:
its ciphertexts decrypt, its signatures verify, its tokens still work and its endpoint tokens stay the same.

The previous release is taken from git history (``git archive``), so this runs its real code, not a
reconstruction of it.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import subprocess
import sys
import tarfile
from pathlib import Path

import hvac
import pytest
from conftest import ROOT
from processes import ServeProcess, cli_env
from sqlalchemy import select

from kms_service.material import ENVELOPE_FORMAT, KeyMaterial, Origin
from kms_service.seal import MasterKey, key_material_aad
from kms_service.storage import models as m
from kms_service.storage.database import create_engine

# The previous release creates the database at its own revision.
pytestmark = pytest.mark.empty_database

# The last commit of the release before the key material envelope and the keyring (schema revision 0007).
PREVIOUS_RELEASE = "c74589d"
SERVICES = ROOT / "tests" / "data" / "encrypt-services.yaml"
APP = ROOT / "tests" / "data" / "encrypt-app.yaml"
SECRET = base64.b64encode(b"written by the previous release").decode()


# The last release before response wrapping, namespaces, token roles and the default policy (schema revision
# 0031): its tokens, policies, mounts and ciphertexts must all work through the revisions after it.
LAST_RELEASE = "9c34a5b"


@pytest.fixture(scope="module")
def previous_release(tmp_path_factory) -> Path:
    """The previous release's package, unpacked from git history."""
    return _unpacked(PREVIOUS_RELEASE, tmp_path_factory)


@pytest.fixture(scope="module")
def last_release(tmp_path_factory) -> Path:
    return _unpacked(LAST_RELEASE, tmp_path_factory)


def _unpacked(commit: str, tmp_path_factory) -> Path:
    archive = subprocess.run(
        [
            "git",
            "-C",
            str(ROOT),
            "archive",
            "--format=tar",
            commit,
            "kms_service",
            "migrations",
            "alembic.ini",
        ],
        capture_output=True,
        check=True,
    ).stdout
    target = tmp_path_factory.mktemp(f"release-{commit}")
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(target, filter="data")
    return target


def _old_env(database_url: str, data_dir: Path, previous_release: Path) -> dict[str, str]:
    # PYTHONPATH comes before the editable install's finder, so `-m kms_service` runs the old code (as long
    # as the working directory, which `-m` puts first, is not this checkout: see OLD_CWD).
    return cli_env(database_url, data_dir, PYTHONPATH=str(previous_release))


def _run(args: list[str], env: dict[str, str], cwd: Path | None = None) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "kms_service", *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_a_database_of_the_previous_release_upgrades_in_place(database_url, data_dir, previous_release):
    old_env = _old_env(database_url, data_dir, previous_release)
    old_cwd = previous_release
    imported = subprocess.run(
        [sys.executable, "-c", "import kms_service; print(kms_service.__file__)"],
        env=old_env,
        cwd=old_cwd,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert imported.startswith(str(previous_release)), f"the old release did not run: {imported}"
    old = ServeProcess(SERVICES, old_env, cwd=old_cwd)
    try:
        relationships_before = _run(
            ["relationships", "--config", str(SERVICES), "--app", str(APP), "--port", str(old.port)], old_env, old_cwd
        ).strip()
        tokens = _endpoint_tokens(relationships_before)
        operator_token = (
            _run(["token", "create", "--policy", "root", "--ttl", "1h"], old_env, old_cwd).strip().splitlines()[-1]
        )
        root = hvac.Client(url=old.url, token=operator_token).secrets.transit
        root.rotate_key("signing-key")
        signer = hvac.Client(url=old.url, token=tokens["vault_sign"]).secrets.transit
        signature = signer.sign_data("signing-key", hash_input=SECRET, hash_algorithm="sha2-256")["data"]["signature"]
        assert signature.startswith("vault-kms:v2:")
        crypto = hvac.Client(url=old.url, token=tokens["vault_secret"]).secrets.transit
        ciphertext = crypto.encrypt_data("app-data", plaintext=SECRET)["data"]["ciphertext"]
        versions = {"app-data": 1, "admin-key": 1, "signing-key": 2}
    finally:
        old.stop()

    env = cli_env(database_url, data_dir)
    new = ServeProcess(SERVICES, env)
    try:
        # The old tokens work, the old ciphertext decrypts, the old signature verifies.
        signer = hvac.Client(url=new.url, token=tokens["vault_sign"]).secrets.transit
        verified = signer.verify_signed_data(
            "signing-key", hash_input=SECRET, signature=signature, hash_algorithm="sha2-256"
        )
        assert verified["data"]["valid"] is True
        crypto = hvac.Client(url=new.url, token=tokens["vault_secret"]).secrets.transit
        assert crypto.decrypt_data("app-data", ciphertext=ciphertext)["data"]["plaintext"] == SECRET
        root = hvac.Client(url=new.url, token=operator_token).secrets.transit
        for name, latest in versions.items():
            assert root.read_key(name)["data"]["latest_version"] == latest
        # New versions work beside the upgraded ones.
        root.rotate_key("app-data")
        assert crypto.decrypt_data("app-data", ciphertext=ciphertext)["data"]["plaintext"] == SECRET
        fresh = crypto.encrypt_data("app-data", plaintext=SECRET)["data"]["ciphertext"]
        assert fresh.startswith("vault-kms:v2:")
        assert crypto.decrypt_data("app-data", ciphertext=fresh)["data"]["plaintext"] == SECRET
        # relationships hands out the same endpoint token as before.
        relationships_after = _run(
            ["relationships", "--config", str(SERVICES), "--app", str(APP), "--port", str(new.port)], env
        ).strip()
        assert _endpoint_tokens(relationships_after) == tokens
    finally:
        new.stop()

    # Every version the old release stored is now an envelope with its own HMAC key, marked as upgraded.
    _assert_upgraded_envelopes(database_url, data_dir, sum(versions.values()))


def test_a_database_of_the_last_release_upgrades_through_the_new_revisions(database_url, data_dir, last_release):
    old_env = _old_env(database_url, data_dir, last_release)
    old = ServeProcess(SERVICES, old_env, cwd=last_release)
    try:
        tokens = _endpoint_tokens(
            _run(
                ["relationships", "--config", str(SERVICES), "--app", str(APP), "--port", str(old.port)],
                old_env,
                last_release,
            )
        )
        operator_token = (
            _run(["token", "create", "--policy", "root", "--ttl", "1h"], old_env, last_release).strip().splitlines()[-1]
        )
        vault = hvac.Client(url=old.url, token=operator_token)
        vault.sys.enable_secrets_engine("transit", path="payments")
        vault.secrets.transit.create_key("cards", mount_point="payments")
        vault.sys.create_or_update_policy(
            "cards-encrypt", 'path "payments/encrypt/cards" { capabilities = ["update"] }'
        )
        limited = vault.auth.token.create(policies=["cards-encrypt"], ttl="1h")["auth"]["client_token"]
        cards = hvac.Client(url=old.url, token=limited).secrets.transit
        card_ciphertext = cards.encrypt_data("cards", plaintext=SECRET, mount_point="payments")["data"]["ciphertext"]
        crypto = hvac.Client(url=old.url, token=tokens["vault_secret"]).secrets.transit
        ciphertext = crypto.encrypt_data("app-data", plaintext=SECRET)["data"]["ciphertext"]
        signer = hvac.Client(url=old.url, token=tokens["vault_sign"]).secrets.transit
        signature = signer.sign_data("signing-key", hash_input=SECRET)["data"]["signature"]
    finally:
        old.stop()

    env = cli_env(database_url, data_dir)
    new = ServeProcess(SERVICES, env)
    try:
        vault = hvac.Client(url=new.url, token=operator_token)
        assert vault.auth.token.lookup_self()["data"]["policies"] == ["root"]
        assert (
            vault.secrets.transit.decrypt_data("cards", ciphertext=card_ciphertext, mount_point="payments")["data"][
                "plaintext"
            ]
            == SECRET
        )
        # The limited token keeps its grant, and only it.
        cards = hvac.Client(url=new.url, token=limited).secrets.transit
        assert cards.encrypt_data("cards", plaintext=SECRET, mount_point="payments")["data"]["ciphertext"]
        with pytest.raises(hvac.exceptions.Forbidden):
            cards.decrypt_data("cards", ciphertext=card_ciphertext, mount_point="payments")
        crypto = hvac.Client(url=new.url, token=tokens["vault_secret"]).secrets.transit
        assert crypto.decrypt_data("app-data", ciphertext=ciphertext)["data"]["plaintext"] == SECRET
        signer = hvac.Client(url=new.url, token=tokens["vault_sign"]).secrets.transit
        assert signer.verify_signed_data("signing-key", hash_input=SECRET, signature=signature)["data"]["valid"] is True
        assert (
            _endpoint_tokens(
                _run(["relationships", "--config", str(SERVICES), "--app", str(APP), "--port", str(new.port)], env)
            )
            == tokens
        )
    finally:
        new.stop()


def _endpoint_tokens(relationships: str) -> dict[str, str]:
    document = json.loads(base64.b64decode(relationships))
    return {name: entries[0]["password"] for name, entries in document.items()}


def _assert_upgraded_envelopes(database_url: str, data_dir: Path, expected: int) -> None:
    master_key = MasterKey.load(data_dir, environ={}, create=False)

    async def check() -> None:
        engine = create_engine(database_url)
        try:
            async with engine.connect() as conn:
                rows = (
                    await conn.execute(
                        select(
                            m.Key.name, m.KeyVersion.version, m.KeyVersion.material_format, m.KeyVersion.sealed_material
                        ).join(m.Key, m.Key.id == m.KeyVersion.key_id)
                    )
                ).all()
        finally:
            await engine.dispose()
        hmac_keys, origins = set(), []
        for name, version, material_format, sealed in rows:
            assert material_format == ENVELOPE_FORMAT
            material = KeyMaterial.from_bytes(
                master_key.unseal(sealed, key_material_aad(name, version, material_format))
            )
            assert len(material.hmac_key) == 32
            hmac_keys.add(material.hmac_key)
            origins.append(material.origin)
        assert origins.count(Origin.UPGRADED) == expected  # the versions the old release wrote
        assert len(hmac_keys) == len(rows)  # one HMAC key per version

    asyncio.run(check())


@pytest.mark.parametrize("commit", [PREVIOUS_RELEASE, LAST_RELEASE])
def test_the_releases_are_in_history(commit):
    """Guards the fixtures above: a clone without these commits must fail loudly, not skip."""
    result = subprocess.run(["git", "-C", str(ROOT), "cat-file", "-t", commit], capture_output=True, text=True)
    assert result.stdout.strip() == "commit", f"git history must include {commit}: {result.stderr}"
