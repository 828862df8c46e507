"""Bad input of every kind gets a clear 4xx in Vault's error envelope, never a 500, and changes nothing."""

from __future__ import annotations

import base64
import json
from datetime import timedelta

import pytest
import requests
from sqlalchemy import select

from kms_service.storage import models as m

# The HTTP surface: the database plays no part here (tests of storage run on both).
pytestmark = pytest.mark.sqlite_only


@pytest.fixture
def server(shared_server):
    """The module's server: each test here reads, or makes keys, tokens and policies of its own names."""
    return shared_server


GOOD = base64.b64encode(b"hello").decode()

# (id, method, path, body, status, error substring). body: dict → JSON; str → raw text; None → no body.
CASES = [
    # transport and JSON
    ("not-json", "POST", "encrypt/vault-enc", "{", 400, "failed to decode JSON input"),
    ("json-array", "POST", "encrypt/vault-enc", "[]", 400, "expected a JSON object"),
    # Under curl's form type (see send), a body not starting with { or [ is a form, as in Vault: these are keys.
    ("form-string", "POST", "encrypt/vault-enc", '"x"', 400, "missing plaintext to encrypt"),
    ("form-null", "POST", "encrypt/vault-enc", "null", 400, "missing plaintext to encrypt"),
    ("form-bad-escape", "POST", "encrypt/vault-enc", "plaintext=%zz", 400, "error parsing form data"),
    ("form-semicolon", "POST", "encrypt/vault-enc", "plaintext=QQ==;a=b", 400, "error parsing form data"),
    ("form-duplicate", "POST", "encrypt/vault-enc", "plaintext=QQ==&plaintext=Qg==", 400, "duplicate key"),
    ("form-not-utf8", "POST", "encrypt/vault-enc", b"plaintext=%ff", 400, "error parsing form data"),
    ("form-batch-string", "POST", "encrypt/vault-enc", "batch_input=[]", 400, "must be a list"),
    ("nan", "POST", "encrypt/vault-enc", '{"plaintext": NaN}', 400, "NaN"),
    ("infinity", "POST", "encrypt/vault-enc", '{"plaintext": "QQ==", "key_version": Infinity}', 400, "NaN"),
    ("duplicate-keys", "POST", "encrypt/vault-enc", '{"plaintext": "QQ==", "plaintext": "Qg=="}', 400, "duplicate"),
    ("lone-surrogate", "POST", "encrypt/vault-enc", '{"plaintext": "\\ud800"}', 400, "unicode"),
    ("deep-nesting", "POST", "encrypt/vault-enc", '{"a":' * 5000 + "1" + "}" * 5000, 400, "JSON"),
    ("huge-int", "POST", "encrypt/vault-enc", '{"plaintext": "QQ==", "key_version": ' + "9" * 5000 + "}", 400, ""),
    ("float-overflow", "POST", "encrypt/vault-enc", '{"plaintext": "QQ==", "key_version": 1e400}', 400, "key_version"),
    ("not-utf8", "POST", "encrypt/vault-enc", b'{"plaintext": "\xff"}', 400, "UTF-8"),
    # plaintext
    ("plaintext-missing", "POST", "encrypt/vault-enc", {}, 400, "missing plaintext to encrypt"),
    ("plaintext-null", "POST", "encrypt/vault-enc", {"plaintext": None}, 400, "missing plaintext to encrypt"),
    ("plaintext-junk", "POST", "encrypt/vault-enc", {"plaintext": "YWJj$$ZA=="}, 400, "illegal base64"),
    ("plaintext-no-padding", "POST", "encrypt/vault-enc", {"plaintext": "YWJjZA"}, 400, "illegal base64"),
    ("plaintext-urlsafe", "POST", "encrypt/vault-enc", {"plaintext": "-_-_"}, 400, "illegal base64"),
    ("plaintext-after-pad", "POST", "encrypt/vault-enc", {"plaintext": "YWJjZA==YWJj"}, 400, "illegal base64"),
    ("plaintext-number", "POST", "encrypt/vault-enc", {"plaintext": 123}, 400, "must be a string"),
    ("plaintext-object", "POST", "encrypt/vault-enc", {"plaintext": {}}, 400, "must be a string"),
    ("nonce", "POST", "encrypt/vault-enc", {"plaintext": GOOD, "nonce": "AAAAAAAAAAAAAAAA"}, 400, "nonce"),
    # batch_input: the request itself is bad (an item's own error is that item's, in batch_results)
    ("batch-empty", "POST", "encrypt/vault-enc", {"batch_input": []}, 400, "missing batch input to process"),
    ("batch-not-list", "POST", "encrypt/vault-enc", {"batch_input": {"plaintext": GOOD}}, 400, "batch input"),
    ("batch-item-not-object", "POST", "decrypt/vault-enc", {"batch_input": ["x"]}, 400, "'[0]' must be an object"),
    ("batch-no-plaintext", "POST", "encrypt/vault-enc", {"batch_input": [{}]}, 400, "missing plaintext"),
    ("batch-item-type", "POST", "sign/vault-sign", {"batch_input": [{"input": 1}]}, 400, "'[0].input' must be"),
    ("context-junk", "POST", "encrypt/vault-enc", {"plaintext": GOOD, "context": "%%"}, 400, "context"),
    # key_version
    ("version-arabic", "POST", "encrypt/vault-enc", {"plaintext": GOOD, "key_version": "١"}, 400, "key_version"),
    ("version-bool", "POST", "encrypt/vault-enc", {"plaintext": GOOD, "key_version": True}, 400, "key_version"),
    ("version-float", "POST", "encrypt/vault-enc", {"plaintext": GOOD, "key_version": 1.5}, 400, "key_version"),
    ("version-underscore", "POST", "encrypt/vault-enc", {"plaintext": GOOD, "key_version": "1_0"}, 400, "key_version"),
    ("version-negative", "POST", "encrypt/vault-enc", {"plaintext": GOOD, "key_version": -1}, 400, "negative"),
    ("version-too-new", "POST", "encrypt/vault-enc", {"plaintext": GOOD, "key_version": "99"}, 400, "higher"),
    # ciphertexts
    ("ct-missing", "POST", "decrypt/vault-enc", {}, 400, "missing ciphertext to decrypt"),
    ("ct-no-prefix", "POST", "decrypt/vault-enc", {"ciphertext": "abc"}, 400, "no prefix"),
    ("ct-wrong-prefix", "POST", "decrypt/vault-enc", {"ciphertext": "Vault:v1:AAAA"}, 400, "no prefix"),
    ("ct-no-fields", "POST", "decrypt/vault-enc", {"ciphertext": "vault-kms:v1"}, 400, "wrong number of fields"),
    ("ct-version-x", "POST", "decrypt/vault-enc", {"ciphertext": "vault-kms:vx:AAAA"}, 400, "could not be decoded"),
    ("ct-version-01", "POST", "decrypt/vault-enc", {"ciphertext": "vault-kms:v01:AAAA"}, 400, "could not be decoded"),
    ("ct-version-0", "POST", "decrypt/vault-enc", {"ciphertext": "vault:v0:AAAA"}, 400, "could not be decoded"),
    ("ct-version-arabic", "POST", "decrypt/vault-enc", {"ciphertext": "vault:v١:AAAA"}, 400, "could not be decoded"),
    ("ct-version-huge", "POST", "decrypt/vault-enc", {"ciphertext": "vault:v" + "9" * 25 + ":AAAA"}, 400, "decoded"),
    ("ct-too-new", "POST", "decrypt/vault-enc", {"ciphertext": "vault-kms:v2:" + "A" * 40}, 400, "too new"),
    ("ct-empty", "POST", "decrypt/vault-enc", {"ciphertext": "vault-kms:v1:"}, 400, "invalid ciphertext length"),
    ("ct-short", "POST", "decrypt/vault-enc", {"ciphertext": "vault-kms:v1:AAAA"}, 400, "invalid ciphertext length"),
    ("ct-bad-b64", "POST", "decrypt/vault-enc", {"ciphertext": "vault-kms:v1:!!!!"}, 400, "could not decode base64"),
    ("ct-extra-colon", "POST", "decrypt/vault-enc", {"ciphertext": "vault-kms:v1:AAAA:BBBB"}, 400, "base64"),
    ("ct-forged", "POST", "decrypt/vault-enc", {"ciphertext": "vault-kms:v1:" + "A" * 40}, 400, "authentication"),
    ("rewrap-bad", "POST", "rewrap/vault-enc", {"ciphertext": "nope"}, 400, "no prefix"),
    ("encrypt-with-sign-key", "POST", "encrypt/vault-sign", {"plaintext": GOOD}, 400, "not supported for key type"),
    # signatures
    ("hash-unknown", "POST", "sign/vault-sign/sha2-999", {"input": GOOD}, 400, "invalid hash algorithm"),
    ("marshaling-bogus", "POST", "sign/vault-sign", {"input": GOOD, "marshaling_algorithm": "x"}, 400, "marshaling"),
    ("input-junk", "POST", "sign/vault-sign/sha2-256", {"input": "%%%"}, 400, "illegal base64"),
    ("sign-version", "POST", "sign/vault-sign/sha2-256", {"input": GOOD, "key_version": 99}, 400, "higher"),
    ("prehashed-len", "POST", "sign/vault-sign/sha2-256", {"input": GOOD, "prehashed": True}, 400, "digest"),
    ("sign-with-enc-key", "POST", "sign/vault-enc/sha2-256", {"input": GOOD}, 400, "does not support signing"),
    ("salt-bogus", "POST", "sign/vault-sign", {"input": GOOD, "salt_length": "foobar"}, 400, "salt length"),
    ("sig-missing", "POST", "verify/vault-sign/sha2-256", {"input": GOOD}, 400, "signature"),
    ("sig-bad-b64", "POST", "verify/vault-sign/sha2-256", {"input": GOOD, "signature": "vault:v1:!!!"}, 400, "base64"),
    (
        "sig-not-der",
        "POST",
        "verify/vault-sign/sha2-256",
        {"input": GOOD, "signature": "vault:v1:AAAA"},
        400,
        "invalid",
    ),
    ("sig-no-prefix", "POST", "verify/vault-sign/sha2-256", {"input": GOOD, "signature": "MEUCIQ"}, 400, "no prefix"),
    (
        "sig-too-new",
        "POST",
        "verify/vault-sign/sha2-256",
        {"input": GOOD, "signature": "vault:v7:AAAA"},
        400,
        "too new",
    ),
    # key management
    ("rotate-bad-body", "POST", "keys/vault-enc/rotate", "{", 400, "failed to decode JSON input"),
    ("config-too-new", "POST", "keys/vault-enc/config", {"min_decryption_version": 99}, 400, "latest key version"),
    ("config-negative", "POST", "keys/vault-enc/config", {"min_decryption_version": -1}, 400, "negative"),
    ("config-text", "POST", "keys/vault-enc/config", {"min_decryption_version": "abc"}, 400, "expected an integer"),
    ("config-bool", "POST", "keys/vault-enc/config", {"deletion_allowed": "yes"}, 400, "expected a boolean"),
    (
        "config-autorotate-short",
        "POST",
        "keys/vault-enc/config",
        {"auto_rotate_period": "30m"},
        400,
        "at least an hour",
    ),
    ("read-missing", "GET", "keys/missing", None, 404, None),
    ("rotate-missing", "POST", "keys/missing/rotate", None, 400, "key not found"),
    ("config-missing", "POST", "keys/missing/config", {}, 400, "no existing key named missing"),
    ("decrypt-missing", "POST", "decrypt/missing", {"ciphertext": "vault:v1:AAAA"}, 400, "encryption key not found"),
    ("sign-missing", "POST", "sign/missing/sha2-256", {"input": GOOD}, 400, "signing key not found"),
    (
        "verify-missing",
        "POST",
        "verify/missing",
        {"input": GOOD, "signature": "vault:v1:AAAA"},
        400,
        "verification key",
    ),
    # paths and methods
    ("name-space", "POST", "encrypt/bad%20name", {"plaintext": GOOD}, 400, "invalid key name"),
    ("name-unicode", "POST", "encrypt/%D0%BA%D0%BB%D1%8E%D1%87", {"plaintext": GOOD}, 400, "invalid key name"),
    ("name-newline", "POST", "encrypt/key%0A", {"plaintext": GOOD}, 400, "invalid path"),
    ("name-slash", "POST", "encrypt/vault-enc%2Fx", {"plaintext": GOOD}, 400, "invalid path"),
    ("name-dotdot", "GET", "keys/%2E%2E", None, 400, "invalid path"),
    ("name-sql", "POST", "encrypt/x';DROP%20TABLE%20keys;--", {"plaintext": GOOD}, 400, "invalid key name"),
    ("name-too-long", "GET", "keys/" + "k" * 129, None, 400, "invalid key name"),
    ("empty-segment", "GET", "keys//rotate", None, 400, "invalid path"),
    ("bad-percent", "GET", "keys/%ff", None, 400, "invalid path"),
    ("unknown-path", "GET", "nothing/here", None, 404, "unsupported path"),
    ("wrong-method", "GET", "encrypt/vault-enc", None, 405, "unsupported operation"),
    ("delete-method", "DELETE", "sign/vault-sign/sha2-256", None, 405, "unsupported operation"),
]


async def _snapshot(kms):
    async with kms.db.reading() as session:
        keys = [
            (
                k.name,
                k.latest_version,
                k.min_decryption_version,
                k.min_encryption_version,
                k.deletion_allowed,
                k.generation,
            )
            for k in (await session.execute(select(m.Key).order_by(m.Key.name))).scalars()
        ]
        versions = (await session.execute(select(m.KeyVersion.key_id, m.KeyVersion.version))).all()
        tokens = (await session.execute(select(m.Token.accessor))).scalars().all()
    return keys, sorted(versions), sorted(tokens)


@pytest.fixture
def root_token(server):
    return server.call(server.kms.tokens.create(["root"], timedelta(hours=1)))[0]


def send(server, token, method, path, body):
    if isinstance(body, dict):
        data = json.dumps(body).encode()
    elif isinstance(body, str):
        data = body.encode()
    else:
        data = body
    # Sent with curl's form content type, as the seed's curl lines do: bodies are JSON regardless.
    headers = {"X-Vault-Token": token, "Content-Type": "application/x-www-form-urlencoded"}
    return requests.request(method, f"{server.url}/v1/transit/{path}", data=data, headers=headers, timeout=30)


def test_every_bad_input_is_a_4xx_in_the_error_envelope_and_changes_nothing(server, root_token):
    before = server.call(_snapshot(server.kms))
    failures = []
    for case_id, method, path, body, status, message in CASES:
        response = send(server, root_token, method, path, body)
        if response.status_code != status or response.headers.get("Content-Type") != "application/json":
            failures.append(f"{case_id}: {response.status_code} {response.text[:200]}")
            continue
        errors = response.json().get("errors")
        if (
            not isinstance(errors, list)
            or (message is None and errors)
            or (message and not any(message in e for e in errors))
        ):
            failures.append(f"{case_id}: unexpected body {response.text[:200]}")
    assert not failures, "\n".join(failures)
    assert server.call(_snapshot(server.kms)) == before


def test_error_messages_never_echo_the_rejected_value(server, root_token):
    canary = "CANARY" + "A" * 10 + "$$"
    for field, path in (
        ("plaintext", "encrypt/vault-enc"),
        ("ciphertext", "decrypt/vault-enc"),
        ("input", "sign/vault-sign"),
    ):
        response = send(server, root_token, "POST", path, {field: canary})
        assert response.status_code == 400
        assert "CANARY" not in response.text


def test_body_over_the_limit_is_413(server, root_token):
    response = send(server, root_token, "POST", "encrypt/vault-enc", b"{" + b" " * (33 * 1024 * 1024) + b"}")
    assert response.status_code == 413
    assert response.json() == {"errors": ["request body too large"]}


def test_unknown_fields_are_ignored_with_vaults_warning(server, root_token):
    response = send(server, root_token, "POST", "encrypt/vault-enc", {"plaintext": GOOD, "foo": 1, "bar": 2})
    assert response.status_code == 200
    assert response.json()["warnings"] == ["Endpoint ignored these unrecognized parameters: [bar foo]"]
    response = send(server, root_token, "POST", "sign/vault-sign", {"input": GOOD, "name": "vault-sign"})
    assert response.status_code == 200
    assert "replaced the value of these parameters" in response.json()["warnings"][0]


def test_signature_with_trailing_der_bytes_is_refused(server, root_token):
    signed = send(server, root_token, "POST", "sign/vault-sign/sha2-256", {"input": GOOD}).json()["data"]["signature"]
    prefix, _, payload = signed.rpartition(":")
    padded = prefix + ":" + base64.b64encode(base64.b64decode(payload) + b"\x00").decode()
    response = send(server, root_token, "POST", "verify/vault-sign/sha2-256", {"input": GOOD, "signature": padded})
    assert response.status_code == 400
    ok = send(server, root_token, "POST", "verify/vault-sign/sha2-256", {"input": GOOD, "signature": signed})
    assert ok.json()["data"] == {"valid": True}
