"""Mounts (kms_service/service/mounts.py, web/sys_mounts.py): several transit engines, each with its own keys,
driven by OpenBao's CLI and hvac as a Vault user would; on SQLite and PostgreSQL."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta

import hvac
import pytest
import requests
from baocli import bao, bao_json
from hvac.exceptions import Forbidden, InvalidRequest
from sqlalchemy import select, update

from kms_service.storage import models as m

PLAINTEXT = base64.b64encode(b"kept apart").decode()


@pytest.fixture
def root(server):
    return server.root_token()


def _send(server, token, method, path, **kwargs):
    return requests.request(method, f"{server.url}/v1/{path}", headers={"X-Vault-Token": token}, timeout=30, **kwargs)


def test_bao_secrets_enable_list_and_keys_apart_per_mount(server, root):
    bao(server, root, "secrets", "enable", "-path=payments", "-description=payments team", "transit")
    mounts = json.loads(bao(server, root, "secrets", "list", "-format=json").stdout)
    assert {"transit/", "payments/", "sys/"} <= set(mounts)
    assert mounts["payments/"]["type"] == "transit"
    assert mounts["payments/"]["description"] == "payments team"
    assert mounts["payments/"]["accessor"].startswith("transit_")
    assert mounts["payments/"]["accessor"] != mounts["transit/"]["accessor"]

    # The same key name in two mounts is two keys.
    bao(server, root, "write", "-f", "payments/keys/vault-enc", "type=aes256-gcm96")
    ours = bao_json(server, root, "read", "payments/keys/vault-enc")["data"]
    assert ours["type"] == "aes256-gcm96" and ours["name"] == "vault-enc"
    assert bao_json(server, root, "read", "transit/keys/vault-enc")["data"]["type"] == "chacha20-poly1305"
    assert bao_json(server, root, "list", "payments/keys") == ["vault-enc"]

    ciphertext = bao_json(server, root, "write", "payments/encrypt/vault-enc", f"plaintext={PLAINTEXT}")["data"][
        "ciphertext"
    ]
    decrypted = bao_json(server, root, "write", "payments/decrypt/vault-enc", f"ciphertext={ciphertext}")
    assert decrypted["data"]["plaintext"] == PLAINTEXT
    # transit's vault-enc is another key: the payments ciphertext does not open there.
    other = bao(server, root, "write", "transit/decrypt/vault-enc", f"ciphertext={ciphertext}", check=False)
    assert other.returncode != 0

    bao(server, root, "secrets", "disable", "payments", check=False)  # refused: it holds a key
    assert "payments/" in json.loads(bao(server, root, "secrets", "list", "-format=json").stdout)


def test_hvac_sys_mounts_with_nested_paths_and_tune(server, root):
    client = server.client(root)
    client.sys.enable_secrets_engine("transit", path="teams/eu", description="EU team")
    listed = client.sys.list_mounted_secrets_engines()
    assert listed["data"]["teams/eu/"]["description"] == "EU team"
    assert listed["teams/eu/"] == listed["data"]["teams/eu/"]  # Vault's top-level copy
    assert client.sys.read_mount_configuration("teams/eu")["data"]["default_lease_ttl"] == 2764800

    client.secrets.transit.create_key("payments", key_type="ecdsa-p256", mount_point="teams/eu")
    signed = client.secrets.transit.sign_data("payments", PLAINTEXT, mount_point="teams/eu")
    assert ":v1:" in signed["data"]["signature"]
    verified = client.secrets.transit.verify_signed_data(
        "payments", PLAINTEXT, signature=signed["data"]["signature"], mount_point="teams/eu"
    )
    assert verified["data"]["valid"] is True

    client.sys.tune_mount_configuration("teams/eu", default_lease_ttl="1h", description="EU payments")
    tuned = client.sys.read_mount_configuration("teams/eu")["data"]
    assert tuned["default_lease_ttl"] == 3600 and tuned["description"] == "EU payments"
    assert client.sys.list_mounted_secrets_engines()["data"]["teams/eu/"]["config"]["default_lease_ttl"] == 3600


@pytest.mark.parametrize(
    ("path", "body", "error"),
    [
        ("payments", {"type": "transit"}, "path is already in use at payments/"),
        ("payments/eu", {"type": "transit"}, "path is already in use at payments/"),
        ("transit/x", {"type": "transit"}, "path is already in use at transit/"),
        ("sys", {"type": "transit"}, 'cannot mount "sys/"'),
        ("auth/x", {"type": "transit"}, 'cannot mount "auth/x/"'),
        ("kv", {"type": "kv"}, "plugin not found in the catalog: kv"),
        ("untyped", {}, "backend type must be specified as a string"),
        ("bad%20name", {"type": "transit"}, "invalid mount path"),
    ],
)
def test_enabling_a_taken_reserved_or_unknown_mount_is_refused(server, root, path, body, error):
    assert _send(server, root, "POST", "sys/mounts/payments", json={"type": "transit"}).status_code == 204
    before = _send(server, root, "GET", "sys/mounts").json()["data"]
    response = _send(server, root, "POST", f"sys/mounts/{path}", json=body)
    assert response.status_code == 400, response.text
    assert error in response.json()["errors"][0]
    assert _send(server, root, "GET", "sys/mounts").json()["data"] == before


def test_a_parent_over_an_existing_nested_mount_is_refused(server, root):
    assert _send(server, root, "POST", "sys/mounts/teams/eu", json={"type": "transit"}).status_code == 204
    response = _send(server, root, "POST", "sys/mounts/teams", json={"type": "transit"})
    assert response.status_code == 400 and response.json()["errors"] == ["path is already in use at teams/eu/"]


def test_disabling_a_mount_with_keys_needs_force_and_deletion_allowed(server, root):
    client = server.client(root)
    client.sys.enable_secrets_engine("transit", path="payments")
    client.secrets.transit.create_key("orders", mount_point="payments")
    client.secrets.transit.create_key("refunds", mount_point="payments")
    ciphertext = client.secrets.transit.encrypt_data("orders", PLAINTEXT, mount_point="payments")["data"]["ciphertext"]

    refused = _send(server, root, "DELETE", "sys/mounts/payments")
    assert refused.status_code == 400
    assert "holds 2 key(s) (orders, refunds)" in refused.json()["errors"][0]
    forced = _send(server, root, "DELETE", "sys/mounts/payments", params={"force": "true"})
    assert forced.status_code == 400
    assert "deletion is not allowed for key(s) orders, refunds" in forced.json()["errors"][0]
    # Nothing changed: the key still decrypts.
    decrypted = client.secrets.transit.decrypt_data("orders", ciphertext, mount_point="payments")
    assert decrypted["data"]["plaintext"] == PLAINTEXT

    client.secrets.transit.update_key_configuration("orders", deletion_allowed=True, mount_point="payments")
    still = _send(server, root, "DELETE", "sys/mounts/payments", params={"force": "true"})
    assert still.status_code == 400 and "key(s) refunds;" in still.json()["errors"][0]
    client.secrets.transit.update_key_configuration("refunds", deletion_allowed=True, mount_point="payments")
    assert _send(server, root, "DELETE", "sys/mounts/payments", params={"force": "true"}).status_code == 204
    assert "payments/" not in client.sys.list_mounted_secrets_engines()["data"]

    # Re-enabled, the path is a new, empty engine: the old keys are gone for good.
    client.sys.enable_secrets_engine("transit", path="payments")
    assert _send(server, root, "GET", "payments/keys/orders").status_code == 404
    # An empty mount goes without force, and disabling what is not mounted succeeds (as in Vault).
    client.sys.disable_secrets_engine("payments")
    assert _send(server, root, "DELETE", "sys/mounts/never-mounted").status_code == 204


def test_transit_holds_the_yaml_keys_and_cannot_be_disabled(server, root):
    response = _send(server, root, "DELETE", "sys/mounts/transit", params={"force": "true"})
    assert response.status_code == 400
    assert response.json()["errors"] == ["cannot unmount transit/: it holds the services YAML's keys"]
    assert _send(server, root, "GET", "transit/keys/vault-enc").status_code == 200


def test_an_unmounted_path_is_404_and_a_mount_is_seen_at_once_after_enable(server, root):
    assert _send(server, root, "GET", "payments/keys/x").status_code == 404
    assert _send(server, root, "POST", "sys/mounts/payments", json={"type": "transit"}).status_code == 204
    assert _send(server, root, "POST", "payments/keys/x", json={}).status_code in (200, 204)
    assert _send(server, root, "GET", "payments/keys/x").status_code == 200


def test_policies_address_mounts_by_path(server, root):
    client = server.client(root)
    client.sys.enable_secrets_engine("transit", path="payments")
    client.secrets.transit.create_key("orders", mount_point="payments")
    client.secrets.transit.create_key("orders")  # transit/orders: the same name elsewhere
    client.sys.create_or_update_acl_policy(
        "payments-encrypt", 'path "payments/encrypt/*" { capabilities = ["update"] }'
    )
    token = server.call(server.kms.tokens.create(["payments-encrypt"], timedelta(hours=1)))[0]
    limited = hvac.Client(url=server.url, token=token)
    limited.secrets.transit.encrypt_data("orders", PLAINTEXT, mount_point="payments")
    with pytest.raises(Forbidden):
        limited.secrets.transit.encrypt_data("orders", PLAINTEXT)
    with pytest.raises(Forbidden):
        limited.sys.enable_secrets_engine("transit", path="mine")
    caps = client.sys.get_capabilities(["payments/encrypt/orders", "transit/encrypt/orders"], token=token)
    assert caps["payments/encrypt/orders"] == ["update"]
    assert caps["transit/encrypt/orders"] == ["deny"]


def test_each_mount_has_its_own_settings(server, root):
    client = server.client(root)
    client.sys.enable_secrets_engine("transit", path="strict")
    assert _send(server, root, "POST", "strict/config/keys", json={"disable_upsert": True}).status_code == 200
    assert _send(server, root, "GET", "strict/config/keys").json()["data"]["disable_upsert"] is True
    assert _send(server, root, "GET", "transit/config/keys").json()["data"]["disable_upsert"] is False
    # Upsert is off in strict/ only: encrypting with a new key name fails there and creates it in transit/.
    refused = _send(server, root, "POST", "strict/encrypt/new-key", json={"plaintext": PLAINTEXT})
    assert refused.status_code == 400
    assert _send(server, root, "POST", "transit/encrypt/new-key", json={"plaintext": PLAINTEXT}).status_code == 200


def test_mounts_and_their_keys_survive_a_restart(start_server):
    first = start_server()
    root = first.root_token()
    client = first.client(root)
    client.sys.enable_secrets_engine("transit", path="teams/eu")
    client.secrets.transit.create_key("orders", mount_point="teams/eu")
    ciphertext = client.secrets.transit.encrypt_data("orders", PLAINTEXT, mount_point="teams/eu")["data"]["ciphertext"]
    accessor = client.sys.list_mounted_secrets_engines()["data"]["teams/eu/"]["accessor"]
    first.stop()

    second = start_server()
    client = second.client(second.root_token())
    assert client.sys.list_mounted_secrets_engines()["data"]["teams/eu/"]["accessor"] == accessor
    decrypted = client.secrets.transit.decrypt_data("orders", ciphertext, mount_point="teams/eu")
    assert decrypted["data"]["plaintext"] == PLAINTEXT


def test_keys_of_other_mounts_auto_rotate(server, root):
    client = server.client(root)
    client.sys.enable_secrets_engine("transit", path="payments")
    client.secrets.transit.create_key("due", mount_point="payments", auto_rotate_period="1h")

    async def age_every_version():
        async with server.kms.db.writing() as session:
            await session.execute(update(m.KeyVersion).values(created_at=datetime.now(UTC) - timedelta(hours=2)))

    server.call(age_every_version())
    assert server.call(server.kms.mounts.rotate_due()) == ["payments/due"]
    assert client.secrets.transit.read_key("due", mount_point="payments")["data"]["latest_version"] == 2


def test_sealed_material_is_bound_to_its_mount(server, root):
    """A key's sealed rows are bound to its mount and name: a row moved to the same name in another mount
    does not open there (an operator's UPDATE cannot swap keys between teams)."""
    client = server.client(root)
    for mount in ("alpha", "beta"):
        client.sys.enable_secrets_engine("transit", path=mount)
        client.secrets.transit.create_key("k", mount_point=mount)

    async def swap():
        async with server.kms.db.writing() as session:
            rows = {
                path: key_id
                for path, key_id in await session.execute(
                    select(m.Mount.path, m.Key.id).join(m.Key, m.Key.mount_id == m.Mount.id).where(m.Key.name == "k")
                )
            }
            alpha = (
                await session.execute(select(m.KeyVersion.sealed_material).where(m.KeyVersion.key_id == rows["alpha"]))
            ).scalar_one()
            await session.execute(
                update(m.KeyVersion).where(m.KeyVersion.key_id == rows["beta"]).values(sealed_material=alpha)
            )
        server.kms.mounts.key_service((await server.kms.mounts.resolve(["beta"]))[0]).forget(None)

    server.call(swap())
    response = _send(server, root, "POST", "beta/encrypt/k", json={"plaintext": PLAINTEXT})
    assert response.status_code == 500
    assert response.json()["errors"] == ["key beta/k version 1 does not open with the master key"]
    with pytest.raises(InvalidRequest):
        client.sys.enable_secrets_engine("transit", path="alpha")
