"""Request bodies as Vault's clients send them: no body, ``null`` and ``{}`` are no fields; form bodies are
forms (string values), JSON under a form type is JSON."""

from __future__ import annotations

import base64
import json
from datetime import timedelta
from urllib.parse import urlencode

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

SECRET = b"the quick brown fox\n"
PLAINTEXT = base64.b64encode(SECRET).decode()
FORM = "application/x-www-form-urlencoded"


@pytest.fixture
def root(server):
    return server.call(server.kms.tokens.create(["root"], timedelta(hours=1)))[0]


def _post(server, token, path, raw=None, content_type=None, **kwargs):
    headers = {"X-Vault-Token": token}
    if content_type is not None:
        headers["Content-Type"] = content_type
    return requests.post(f"{server.url}/v1/{path}", data=raw, headers=headers, timeout=30, **kwargs)


# -- bodies -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "content_type"),
    [
        (b"", None),
        (b"null", None),  # what `bao write -f` sends (no Content-Type)
        (b"null\n", "application/json"),
        (b"{}", None),
        (b" {} ", "application/json"),
        (b"", FORM),  # curl -X POST --data ''
        (b"{}", FORM),  # curl --data '{}'
    ],
    ids=["empty", "null", "json-null", "object", "json-object", "form-empty", "form-object"],
)
def test_rotate_takes_no_body_null_or_an_empty_object(server, root, raw, content_type):
    before = server.client(root).secrets.transit.read_key("vault-enc")["data"]["latest_version"]
    response = _post(server, root, "transit/keys/vault-enc/rotate", raw, content_type)
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"] == "application/json"
    assert response.json()["data"]["latest_version"] == before + 1
    assert response.json()["warnings"] is None


def test_null_under_a_form_type_is_a_form_key_as_in_vault(server, root):
    """curl --data 'null' sends a form type; Vault reads the body as a form whose one key is 'null'."""
    response = _post(server, root, "transit/keys/vault-enc/rotate", b"null", FORM)
    assert response.status_code == 200
    assert response.json()["warnings"] == ["Endpoint ignored these unrecognized parameters: [null]"]


def test_json_that_is_not_an_object_is_still_refused(server, root):
    for raw, content_type in ((b'"x"', "application/json"), (b"5", None), (b"[]", FORM), (b" [1]", FORM)):
        response = _post(server, root, "transit/keys/vault-enc/rotate", raw, content_type)
        assert response.status_code == 400, raw
        assert response.json() == {"errors": ["failed to decode JSON input: expected a JSON object"]}


def test_form_encoded_encrypt_and_decrypt(server, root):
    """requests' data={...} is a real form (application/x-www-form-urlencoded): string values, as Vault reads."""
    encrypted = _post(server, root, "transit/encrypt/vault-enc", {"plaintext": PLAINTEXT, "key_version": "1"})
    assert encrypted.request.headers["Content-Type"] == FORM
    assert encrypted.status_code == 200, encrypted.text
    assert encrypted.json()["warnings"] is None
    ciphertext = encrypted.json()["data"]["ciphertext"]
    assert ciphertext.startswith("vault-kms:v1:")
    decrypted = _post(server, root, "transit/decrypt/vault-enc", {"ciphertext": ciphertext})
    assert decrypted.status_code == 200, decrypted.text
    assert base64.b64decode(decrypted.json()["data"]["plaintext"]) == SECRET
    # associated_data too, and '+' in base64 survives percent-encoding
    aad = base64.b64encode(b"\xfb\xef\xbe").decode()
    assert "+" in aad
    encrypted = _post(server, root, "transit/encrypt/vault-enc", {"plaintext": PLAINTEXT, "associated_data": aad})
    ciphertext = encrypted.json()["data"]["ciphertext"]
    decrypted = _post(server, root, "transit/decrypt/vault-enc", {"ciphertext": ciphertext, "associated_data": aad})
    assert base64.b64decode(decrypted.json()["data"]["plaintext"]) == SECRET
    # an unescaped '+' is a space, so that base64 is refused (as in Vault)
    refused = _post(server, root, "transit/encrypt/vault-enc", "plaintext=aGk+", FORM)
    assert refused.status_code == 400 and "illegal base64" in refused.json()["errors"][0]


def test_form_values_convert_like_json_strings_and_unknown_keys_warn(server, root):
    response = _post(server, root, "transit/keys/vault-sign/config", {"deletion_allowed": "true", "foo": ""})
    assert response.status_code == 200, response.text
    assert response.json()["data"]["deletion_allowed"] is True
    assert response.json()["warnings"] == ["Endpoint ignored these unrecognized parameters: [foo]"]
    jws = {"input": PLAINTEXT, "marshaling_algorithm": "jws"}
    signed = _post(server, root, "transit/sign/vault-sign/sha2-256", jws)
    assert signed.status_code == 200, signed.text
    verified = _post(
        server,
        root,
        "transit/verify/vault-sign/sha2-256",
        {**jws, "signature": signed.json()["data"]["signature"]},
    )
    assert verified.json()["data"]["valid"] is True
    # A key without '=' is a key with an empty value; an empty pair is nothing.
    response = _post(server, root, "transit/encrypt/vault-enc", f"plaintext={PLAINTEXT}&&flag", FORM)
    assert response.status_code == 200
    assert response.json()["warnings"] == ["Endpoint ignored these unrecognized parameters: [flag]"]


def test_json_under_a_form_type_stays_json(server, root):
    """curl --data '{...}' sends JSON with a form type: still JSON (Vault looks for a leading { or [)."""
    body = "\n  " + json.dumps({"plaintext": PLAINTEXT, "key_version": 1})
    response = _post(server, root, "transit/encrypt/vault-enc", body, FORM)
    assert response.status_code == 200, response.text
    # and strict: a duplicate key is refused with the JSON text
    response = _post(server, root, "transit/encrypt/vault-enc", '{"plaintext": "QQ==", "plaintext": "QQ=="}', FORM)
    assert response.status_code == 400
    assert response.json() == {"errors": ["failed to decode JSON input: duplicate key in object"]}


def test_form_limits_are_gos(server, root):
    path = "transit/keys/vault-sign/config"
    at_limit = "&".join(f"k{i}=" for i in range(10_000))
    assert _post(server, root, path, at_limit, FORM).status_code == 200
    over = _post(server, root, path, at_limit + "&", FORM)
    assert over.status_code == 400 and over.json() == {"errors": ["error parsing form data"]}
    big = _post(server, root, path, "x=" + "A" * (10 * 1024 * 1024), FORM)
    assert big.status_code == 400 and big.json() == {"errors": ["error parsing form data"]}


def test_generated_form_bodies_never_get_a_5xx(server, root):
    fields = st.sampled_from(["plaintext", "ciphertext", "key_version", "context", "batch_input", "nonce", ""])
    values = st.text(max_size=30) | st.sampled_from(["", "QQ==", "vault-kms:v1:AAAA", "1", "-1", "true", "[]"])
    pairs = st.lists(st.tuples(fields | st.text(max_size=8), values), max_size=6)

    @settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(
        body=pairs.map(urlencode).map(str.encode) | st.binary(max_size=100),
        path=st.sampled_from(["transit/encrypt/vault-enc", "transit/decrypt/vault-enc", "transit/sign/vault-sign"]),
    )
    def check(body, path):
        response = _post(server, root, path, body, FORM)
        assert response.status_code < 500, (body, response.text)
        assert response.headers["Content-Type"] == "application/json"

    check()
