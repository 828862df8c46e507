"""Generated bodies and paths against the real server: whatever comes in, the answer is never a 5xx,
always Vault's JSON envelope, and a secret-looking input never reaches the logs."""

from __future__ import annotations

import json
import logging
from datetime import timedelta

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

# The HTTP surface: the database plays no part here (tests of storage run on both).
pytestmark = pytest.mark.sqlite_only


@pytest.fixture
def server(shared_server):
    """The module's server: each test here reads, or makes keys, tokens and policies of its own names."""
    return shared_server


FIELDS = [
    "plaintext",
    "ciphertext",
    "input",
    "signature",
    "key_version",
    "context",
    "associated_data",
    "nonce",
    "hash_algorithm",
    "marshaling_algorithm",
    "prehashed",
    "min_decryption_version",
    "min_encryption_version",
    "deletion_allowed",
    "exportable",
    "batch_input",
    "salt_length",
    "signature_algorithm",
    "name",
    "hmac",
]
PATHS = [
    "transit/encrypt/vault-enc",
    "transit/decrypt/vault-enc",
    "transit/rewrap/vault-enc",
    "transit/sign/vault-sign",
    "transit/sign/vault-sign/sha2-256",
    "transit/verify/vault-sign/sha3-512",
    "transit/keys/vault-enc/config",
    "transit/keys/vault-sign",
    "transit/encrypt/vault-sign",
]
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False),
    st.text(max_size=40),
    st.sampled_from(["", "vault:v1:", "vault-kms:v1:AAAA", "vault:v0:AAAA", "QQ==", "sha2-256", "jws", "1", "true"]),
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=6,
)
bodies = st.dictionaries(st.sampled_from(FIELDS), values, max_size=6)


@pytest.fixture
def root(server):
    return server.call(server.kms.tokens.create(["root"], timedelta(hours=1)))[0]


def test_generated_requests_never_get_a_5xx(server, root):
    @settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(path=st.sampled_from(PATHS), body=bodies, method=st.sampled_from(["POST", "PUT", "GET"]))
    def check(path, body, method):
        response = requests.request(
            method, f"{server.url}/v1/{path}", data=json.dumps(body), headers={"X-Vault-Token": root}, timeout=30
        )
        assert response.status_code < 500, (path, body, response.text)
        assert response.headers["Content-Type"] == "application/json"
        document = response.json()
        if response.status_code >= 400:
            assert set(document) == {"errors"} and isinstance(document["errors"], list)
        else:
            assert "data" in document

    check()


def test_generated_raw_bodies_never_get_a_5xx(server, root):
    @settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(raw=st.binary(max_size=200) | st.text(max_size=200).map(str.encode))
    def check(raw):
        response = requests.post(
            f"{server.url}/v1/transit/encrypt/vault-enc", data=raw, headers={"X-Vault-Token": root}, timeout=30
        )
        assert response.status_code < 500, (raw, response.text)

    check()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(segment=st.text(min_size=1, max_size=20))
def test_generated_key_names_in_paths_never_get_a_5xx(server, root, segment):
    from urllib.parse import quote

    response = requests.post(
        f"{server.url}/v1/transit/encrypt/{quote(segment, safe='')}",
        json={"plaintext": "QQ=="},
        headers={"X-Vault-Token": root},
        timeout=30,
    )
    assert response.status_code in (200, 400, 404), (segment, response.text)


def test_plaintext_and_tokens_never_reach_the_logs(server, root, caplog):
    caplog.set_level(logging.DEBUG)
    canary = "Q0FOQVJZ"  # base64 of CANARY
    secret_values = [canary, "CANARY", "vault-kms:v1:Q0FOQVJZQ0FOQVJZQ0FOQVJZQ0FOQVJZ", root]
    for path, body in [
        ("transit/encrypt/vault-enc", {"plaintext": canary}),
        ("transit/encrypt/vault-enc", {"plaintext": canary + "$"}),
        ("transit/decrypt/vault-enc", {"ciphertext": secret_values[2]}),
        ("transit/sign/vault-sign", {"input": canary, "key_version": 99}),
        ("transit/encrypt/vault-enc", {"plaintext": canary, "nonce": canary}),
    ]:
        requests.post(f"{server.url}/v1/{path}", json=body, headers={"X-Vault-Token": root}, timeout=30)
    requests.get(f"{server.url}/v1/transit/keys/x", headers={"X-Vault-Token": root[:-1] + "x"}, timeout=30)
    assert caplog.records, "nothing was logged at all: the check below would prove nothing"
    for value in secret_values:
        assert value not in caplog.text
