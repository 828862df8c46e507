"""Each policy allowed and denied on each endpoint, with real tokens against the real server."""

from __future__ import annotations

import base64
from datetime import timedelta

import hvac
import pytest
import requests

# The HTTP surface: the database plays no part here (tests of storage run on both).
pytestmark = pytest.mark.sqlite_only

INPUT = base64.b64encode(b"payload").decode()

# operation → (method, path template, body factory)
OPERATIONS = {
    "read": ("GET", "transit/keys/{key}", None),
    "rotate": ("POST", "transit/keys/{key}/rotate", None),
    "config": ("POST", "transit/keys/{key}/config", lambda f: {"deletion_allowed": False}),
    "sign": ("POST", "transit/sign/{key}/sha2-256", lambda f: {"input": INPUT}),
    "sign-bare": ("POST", "transit/sign/{key}", lambda f: {"input": INPUT, "hash_algorithm": "sha2-256"}),
    "verify": ("POST", "transit/verify/{key}/sha2-256", lambda f: {"input": INPUT, "signature": f["signature"]}),
    "encrypt": ("POST", "transit/encrypt/{key}", lambda f: {"plaintext": INPUT}),
    "decrypt": ("POST", "transit/decrypt/{key}", lambda f: {"ciphertext": f["ciphertext"]}),
    "rewrap": ("POST", "transit/rewrap/{key}", lambda f: {"ciphertext": f["ciphertext"]}),
}
GRANTS = {
    "admin": {"read", "rotate", "config"},
    "sign": {"sign", "sign-bare"},
    "verify": {"verify"},
    "encrypt": {"encrypt"},
    "decrypt": {"decrypt"},
    "rewrap": {"rewrap"},
}
ENDPOINTS = {  # endpoint → (policy, key) as in tests/data/services.yaml
    "admin_sign": ("admin", "vault-sign"),
    "admin_enc": ("admin", "vault-enc"),
    "signer": ("sign", "vault-sign"),
    "verifier": ("verify", "vault-sign"),
    "encrypter": ("encrypt", "vault-enc"),
    "decrypter": ("decrypt", "vault-enc"),
    "rewrapper": ("rewrap", "vault-enc"),
}
SIGN_OPS = {"sign", "sign-bare", "verify"}
ENCRYPTION_OPS = {"encrypt", "decrypt", "rewrap"}


def call(server, token, operation, key, fixtures):
    method, path, body = OPERATIONS[operation]
    return requests.request(
        method,
        f"{server.url}/v1/{path.format(key=key)}",
        headers={"X-Vault-Token": token} if token else {},
        json=body(fixtures) if body else None,
        timeout=10,
    )


@pytest.fixture
def fixtures(server):
    """A valid signature and ciphertext, made with the all-in-one endpoints."""
    signer = server.client(server.endpoint_token("manage_keys")).secrets.transit
    crypto = server.client(server.endpoint_token("crypto")).secrets.transit
    return {
        "signature": signer.sign_data("vault-sign", hash_input=INPUT)["data"]["signature"],
        "ciphertext": crypto.encrypt_data("vault-enc", plaintext=INPUT)["data"]["ciphertext"],
    }


def test_every_policy_allows_exactly_its_paths_on_its_key(server, fixtures):
    for endpoint, (policy, granted_key) in ENDPOINTS.items():
        token = server.endpoint_token(endpoint)
        for operation in OPERATIONS:
            for key in ("vault-sign", "vault-enc"):
                response = call(server, token, operation, key, fixtures)
                where = f"{endpoint} ({policy}:{granted_key}) {operation} {key}"
                assert response.headers["Content-Type"] == "application/json", where
                if operation in GRANTS[policy] and key == granted_key:
                    wrong_type = (operation in SIGN_OPS and key == "vault-enc") or (
                        operation in ENCRYPTION_OPS and key == "vault-sign"
                    )
                    assert response.status_code == (400 if wrong_type else 200), (where, response.text)
                else:
                    assert response.status_code == 403, (where, response.text)
                    assert response.json() == {"errors": ["permission denied"]}, where


def test_verify_is_200_with_valid_false_for_a_wrong_signature(server, fixtures):
    token = server.endpoint_token("verifier")
    other = base64.b64encode(b"other").decode()
    response = requests.post(
        f"{server.url}/v1/transit/verify/vault-sign/sha2-256",
        headers={"X-Vault-Token": token},
        json={"input": other, "signature": fixtures["signature"]},
        timeout=10,
    )
    assert response.status_code == 200
    assert response.json()["data"] == {"valid": False}


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"X-Vault-Token": ""},
        {"X-Vault-Token": "kms.not-a-real-token-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"},
        {"X-Vault-Token": "null"},
        {"Authorization": "Basic Zm9vOmJhcg=="},
        {"X-Vault-Token": "x" * 4000},
    ],
    ids=["none", "empty", "unknown", "null", "basic-auth", "huge"],
)
def test_missing_or_unknown_token_is_403(server, headers):
    response = requests.get(f"{server.url}/v1/transit/keys/vault-sign", headers=headers, timeout=10)
    assert response.status_code == 403
    assert response.json() == {"errors": ["permission denied"]}


def test_oversized_header_is_a_clean_400_and_not_logged(server, caplog):
    canary = "CANARYTOKEN" * 2000
    response = requests.get(f"{server.url}/v1/transit/keys/vault-sign", headers={"X-Vault-Token": canary}, timeout=10)
    assert response.status_code == 400
    assert "malformed HTTP request" in caplog.text
    assert "CANARYTOKEN" not in caplog.text


def test_bearer_token_is_accepted_and_x_vault_token_wins(server):
    token = server.endpoint_token("admin_sign")
    url = f"{server.url}/v1/transit/keys/vault-sign"
    assert requests.get(url, headers={"Authorization": f"Bearer {token}"}, timeout=10).status_code == 200
    both = {"Authorization": f"Bearer {token}", "X-Vault-Token": "kms." + "A" * 43}
    assert requests.get(url, headers=both, timeout=10).status_code == 403


def test_root_token_can_do_everything_including_listing_keys(server, fixtures):
    token, _ = server.call(server.kms.tokens.create(["root"], timedelta(hours=1)))
    for operation in ("read", "rotate", "sign", "verify"):
        assert call(server, token, operation, "vault-sign", fixtures).status_code == 200, operation
    for operation in ("encrypt", "decrypt", "rewrap"):
        assert call(server, token, operation, "vault-enc", fixtures).status_code == 200, operation
    # hvac's strict_http mode sends GET ?list=true (its default, the LIST method: test_bodies_and_methods.py).
    strict = hvac.Client(url=server.url, token=token, strict_http=True)
    listed = strict.secrets.transit.list_keys()
    assert listed["data"]["keys"] == ["vault-enc", "vault-sign"]


def test_operator_token_with_named_policies(server, fixtures):
    token, info = server.call(server.kms.tokens.create(["encrypt:vault-enc", "decrypt:vault-enc"], timedelta(hours=1)))
    assert info.policies == ("decrypt:vault-enc", "default", "encrypt:vault-enc")
    assert call(server, token, "encrypt", "vault-enc", fixtures).status_code == 200
    assert call(server, token, "decrypt", "vault-enc", fixtures).status_code == 200
    assert call(server, token, "rewrap", "vault-enc", fixtures).status_code == 403
    assert call(server, token, "read", "vault-enc", fixtures).status_code == 403


def test_unknown_path_is_404_for_a_granted_prefix_and_wrong_method_is_405(server):
    token = server.endpoint_token("admin_sign")
    headers = {"X-Vault-Token": token}
    unknown = requests.get(f"{server.url}/v1/transit/keys/vault-sign/nothing-here", headers=headers, timeout=10)
    assert unknown.status_code == 404 and unknown.json() == {"errors": ["unsupported path"]}
    wrong_method = requests.get(f"{server.url}/v1/transit/keys/vault-sign/rotate", headers=headers, timeout=10)
    assert wrong_method.status_code == 405 and wrong_method.json() == {"errors": ["unsupported operation"]}
    # Writes accept PUT as well as POST (the Vault CLI and node-vault use PUT).
    put = requests.put(f"{server.url}/v1/transit/keys/vault-sign/rotate", headers=headers, timeout=10)
    assert put.status_code == 200 and put.json()["data"]["latest_version"] == 2
