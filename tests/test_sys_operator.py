"""Vault's operator surface, first part: status and ACL policy documents, through OpenBao's CLI and hvac's
sys API, on SQLite; and the same documents evaluated by OpenBao and by this service."""

from __future__ import annotations

import base64
import json

import hvac
import hvac.exceptions
import pytest
import requests
from baocli import bao

# The HTTP surface: the database plays no part here (tests of storage run on both).
pytestmark = pytest.mark.sqlite_only


@pytest.fixture
def server(shared_server):
    """The module's server: each test here reads, or makes keys, tokens and policies of its own names."""
    return shared_server


# From Vault's policy documentation (the transit parts), with a deny and a '+' segment.
DOCS_POLICY = """
# Allow encrypting and decrypting with any key, but not rotating them
path "transit/encrypt/*" {
  capabilities = ["update"]
}
path "transit/decrypt/+" {
  capabilities = ["update"]
}
path "transit/keys/+/rotate" {
  capabilities = ["deny"]
}
path "transit/keys" {
  capabilities = ["list"]
}
"""
SECRET = base64.b64encode(b"secret").decode()


@pytest.fixture
def root(server):
    return server.root_token()


def test_bao_status_and_hvac_seal_status(server):
    status = json.loads(bao(server, "", "status", "-format=json").stdout)
    assert status["sealed"] is False and status["initialized"] is True
    client = hvac.Client(url=server.url)
    assert client.sys.is_sealed() is False
    assert client.sys.read_seal_status()["sealed"] is False
    assert client.sys.read_leader_status()["ha_enabled"] is False


def test_bao_policy_commands(server, root, tmp_path):
    policy_file = tmp_path / "app.hcl"
    policy_file.write_text(DOCS_POLICY)
    bao(server, root, "policy", "write", "app", str(policy_file))
    assert "app" in bao(server, root, "policy", "list").stdout.split()
    assert bao(server, root, "policy", "read", "app").stdout.strip() == DOCS_POLICY.strip()
    refused = bao(server, root, "policy", "write", "bad", "-", check=False)
    assert refused.returncode != 0
    # A token holding the document: encrypt yes, rotate no.
    token = server.call(server.kms.tokens.create(["app"], None))[0]
    transit = server.client(token).secrets.transit
    assert transit.encrypt_data("vault-enc", plaintext=SECRET)["data"]["ciphertext"]
    with pytest.raises(hvac.exceptions.Forbidden):
        transit.rotate_key("vault-enc")
    caps = bao(server, root, "token", "capabilities", token, "transit/keys/vault-enc/rotate").stdout.strip()
    assert caps == "deny"
    caps = bao(server, root, "token", "capabilities", token, "transit/encrypt/vault-enc").stdout.strip()
    assert caps == "update"
    # Changing the document takes effect at once on this node.
    policy_file.write_text('path "transit/keys/+/rotate" { capabilities = ["update"] }')
    bao(server, root, "policy", "write", "app", str(policy_file))
    assert transit.rotate_key("vault-enc")["data"]["latest_version"] == 2
    bao(server, root, "policy", "delete", "app")
    with pytest.raises(hvac.exceptions.Forbidden):
        transit.rotate_key("vault-enc")


def test_hvac_sys_policy_methods(server, root):
    client = server.client(root)
    client.sys.create_or_update_acl_policy("reader", 'path "transit/keys/*" { capabilities = ["read"] }')
    assert "reader" in client.sys.list_acl_policies()["data"]["keys"]
    assert "transit/keys/*" in client.sys.read_acl_policy("reader")["data"]["policy"]
    with pytest.raises(hvac.exceptions.InvalidRequest, match="failed to parse policy"):
        client.sys.create_or_update_acl_policy("broken", 'path "x" { capabilities = ["fly"] }')
    with pytest.raises(hvac.exceptions.InvalidRequest, match="root"):
        client.sys.delete_acl_policy("root")
    with pytest.raises(hvac.exceptions.InvalidRequest, match="built-in"):
        client.sys.create_or_update_acl_policy("encrypt:vault-enc", 'path "x" { capabilities = ["read"] }')
    client.sys.delete_acl_policy("reader")
    assert "reader" not in client.sys.list_acl_policies()["data"]["keys"]


def test_hvac_older_sys_policy_methods(server, root):
    """hvac's create_or_update_policy, read_policy, list_policies and delete_policy use Vault's older
    sys/policy paths: the same documents."""
    client = server.client(root)
    client.sys.create_or_update_policy("legacy", 'path "transit/keys/*" { capabilities = ["read"] }')
    assert "legacy" in client.sys.list_acl_policies()["data"]["keys"]
    listed = client.sys.list_policies()
    assert "legacy" in listed["data"]["policies"] and listed["data"]["keys"] == listed["data"]["policies"]
    assert "transit/keys/*" in client.sys.read_policy("legacy")["data"]["rules"]
    assert client.sys.read_acl_policy("legacy")["data"]["policy"] == client.sys.read_policy("legacy")["rules"]
    with pytest.raises(hvac.exceptions.InvalidRequest, match="root"):
        client.sys.delete_policy("root")
    client.sys.delete_policy("legacy")
    with pytest.raises(hvac.exceptions.InvalidPath):
        client.sys.read_policy("legacy")


@pytest.mark.parametrize(
    "document",
    [
        'path "sys/policies/acl/*" { capabilities = ["create", "update"] ',
        'path "x" { allowed_parameters = { "a" = [] } capabilities = ["read"] }',
        '{"path": {"x": {"capabilities": ["read", "teleport"]}}}',
        "",
    ],
    ids=["unclosed", "parameters", "bad-capability", "empty"],
)
def test_bad_documents_are_400s_and_change_nothing(server, root, document):
    response = requests.put(
        f"{server.url}/v1/sys/policies/acl/bad", json={"policy": document}, headers={"X-Vault-Token": root}
    )
    assert response.status_code == 400, response.text
    assert "bad" not in server.client(root).sys.list_acl_policies()["data"]["keys"]


def test_writing_policies_needs_sys_rights(server):
    encrypter = server.client(server.endpoint_token("encrypter"))
    with pytest.raises(hvac.exceptions.Forbidden):
        encrypter.sys.create_or_update_acl_policy("mine", 'path "*" { capabilities = ["sudo"] }')
