"""Beyond Vault (issue 12): post-quantum signatures (ML-DSA, FIPS 204), public-key encryption with HPKE
(RFC 9180), AES-256-GCM-SIV (RFC 8452); each through hvac's generic read/write, on SQLite,
and checked independently with ``cryptography``."""

from __future__ import annotations

import base64
from datetime import timedelta

import pytest
import requests
from cryptography.hazmat.primitives import hpke, serialization
from cryptography.hazmat.primitives.asymmetric import mldsa
from hvac.exceptions import InvalidRequest

from kms_service.keytypes import hpke_mlkem768_x25519_public_key

# The HTTP surface: the database plays no part here (tests of storage run on both).
pytestmark = pytest.mark.sqlite_only

MESSAGE = b"post-quantum, pre-coffee"
B64 = base64.b64encode(MESSAGE).decode()
ML_DSA_PUBLIC = {
    "ml-dsa-44": mldsa.MLDSA44PublicKey,
    "ml-dsa-65": mldsa.MLDSA65PublicKey,
    "ml-dsa-87": mldsa.MLDSA87PublicKey,
}


@pytest.fixture
def vault(server):
    return server.client(server.root_token())


def _body(signed: str) -> bytes:
    return base64.b64decode(signed.split(":", 2)[2])


@pytest.mark.parametrize(
    ("spelling", "expected"),
    [
        ({"type": "ml-dsa-44"}, "ml-dsa-44"),
        ({"type": "mldsa-65"}, "ml-dsa-65"),  # OpenBao 2.7's spelling
        ({"type": "ml-dsa", "parameter_set": "87"}, "ml-dsa-87"),  # Vault Enterprise's
    ],
)
def test_ml_dsa_signs_and_the_exported_public_key_verifies(vault, spelling, expected):
    vault.write_data("transit/keys/pq", data=spelling)
    key = vault.read("transit/keys/pq")["data"]
    assert key["type"] == expected and key["supports_signing"] and not key["supports_encryption"]
    signed = vault.write_data("transit/sign/pq", data={"input": B64})["data"]["signature"]
    verified = vault.write_data("transit/verify/pq", data={"input": B64, "signature": signed})["data"]["valid"]
    assert verified is True
    other = base64.b64encode(b"another message").decode()
    assert vault.write_data("transit/verify/pq", data={"input": other, "signature": signed})["data"]["valid"] is False

    # Independently: the exported PKIX public key verifies the signature with cryptography.
    pem = vault.read("transit/export/public-key/pq")["data"]["keys"]["1"]
    public = serialization.load_pem_public_key(pem.encode())
    assert isinstance(public, ML_DSA_PUBLIC[expected])
    public.verify(_body(signed), MESSAGE)
    assert key["keys"]["1"]["public_key"] == pem


def test_ml_dsa_refuses_prehashed_input_and_a_bad_parameter_set(vault):
    vault.write_data("transit/keys/pq", data={"type": "ml-dsa-65"})
    with pytest.raises(InvalidRequest, match="prehashed input is not supported"):
        vault.write_data("transit/sign/pq", data={"input": B64, "prehashed": True})
    with pytest.raises(InvalidRequest, match="parameter_set must be one of 44, 65, 87"):
        vault.write_data("transit/keys/pq-bad", data={"type": "ml-dsa", "parameter_set": "128"})
    assert vault.read("transit/keys/pq-bad") is None


def test_ml_dsa_versions_rotate_and_old_signatures_still_verify(vault):
    vault.write_data("transit/keys/pq", data={"type": "ml-dsa-44"})
    first = vault.write_data("transit/sign/pq", data={"input": B64})["data"]["signature"]
    vault.write_data("transit/keys/pq/rotate", data={})
    second = vault.write_data("transit/sign/pq", data={"input": B64})["data"]["signature"]
    assert first.split(":")[1] == "v1" and second.split(":")[1] == "v2"
    batch = [{"input": B64, "signature": first}, {"input": B64, "signature": second}]
    results = vault.write_data("transit/verify/pq", data={"batch_input": batch})["data"]["batch_results"]
    assert [r["valid"] for r in results] == [True, True]


def _their_public_key(key_type: str, shown: str):
    if key_type == "hpke-x25519":
        return serialization.load_pem_public_key(shown.encode())
    return hpke_mlkem768_x25519_public_key(shown)


HPKE_SUITES = {
    "hpke-x25519": hpke.Suite(hpke.KEM.X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.CHACHA20_POLY1305),
    "hpke-mlkem768-x25519": hpke.Suite(hpke.KEM.MLKEM768_X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.CHACHA20_POLY1305),
}


@pytest.mark.parametrize("key_type", list(HPKE_SUITES))
def test_hpke_sealed_offline_with_cryptography_opens_through_the_api(vault, key_type):
    vault.write_data("transit/keys/inbox", data={"type": key_type})
    key = vault.read("transit/keys/inbox")["data"]
    assert key["supports_encryption"] and key["supports_decryption"] and not key["supports_signing"]
    shown = key["keys"]["1"]["public_key"]
    assert vault.read("transit/export/public-key/inbox")["data"]["keys"]["1"] == shown
    public = _their_public_key(key_type, shown)
    suite = HPKE_SUITES[key_type]

    # A client seals with its own HPKE library: `context` is HPKE's info.
    info = b"order 42"
    sealed = suite.encrypt(MESSAGE, public, info=info)
    ciphertext = f"vault:v1:{base64.b64encode(sealed).decode()}"
    opened = vault.write_data(
        "transit/decrypt/inbox", data={"ciphertext": ciphertext, "context": base64.b64encode(info).decode()}
    )
    assert base64.b64decode(opened["data"]["plaintext"]) == MESSAGE
    # The wrong info does not open it.
    with pytest.raises(InvalidRequest, match="hpke: message authentication failed"):
        vault.write_data("transit/decrypt/inbox", data={"ciphertext": ciphertext})

    # The service encrypts too (with the same public key), and rewraps after a rotation.
    made = vault.write_data("transit/encrypt/inbox", data={"plaintext": B64})["data"]["ciphertext"]
    vault.write_data("transit/keys/inbox/rotate", data={})
    rewrapped = vault.write_data("transit/rewrap/inbox", data={"ciphertext": made})["data"]["ciphertext"]
    assert rewrapped.split(":")[1] == "v2"
    batch = [{"ciphertext": made}, {"ciphertext": rewrapped}, {"ciphertext": made[:-4] + "AAAA"}]
    answer = vault.write_data(
        "transit/decrypt/inbox", data={"batch_input": batch, "partial_failure_response_code": 200}
    )
    results = answer["data"]["batch_results"]
    assert [base64.b64decode(r["plaintext"]) for r in results[:2]] == [MESSAGE, MESSAGE]
    assert results[2]["error"]


def test_hpke_refuses_associated_data_and_signing(vault):
    vault.write_data("transit/keys/inbox", data={"type": "hpke-x25519"})
    with pytest.raises(InvalidRequest, match="associated_data provided for non-AEAD cipher suite hpke-x25519"):
        vault.write_data("transit/encrypt/inbox", data={"plaintext": B64, "associated_data": B64})
    with pytest.raises(InvalidRequest):
        vault.write_data("transit/sign/inbox", data={"input": B64})


def test_aes256_gcm_siv_round_trips_and_opens_with_cryptography(vault):
    from cryptography.hazmat.primitives.ciphers.aead import AESGCMSIV

    vault.write_data("transit/keys/siv", data={"type": "aes256-gcm-siv", "exportable": True})
    aad = base64.b64encode(b"header").decode()
    ciphertext = vault.write_data("transit/encrypt/siv", data={"plaintext": B64, "associated_data": aad})["data"][
        "ciphertext"
    ]
    opened = vault.write_data("transit/decrypt/siv", data={"ciphertext": ciphertext, "associated_data": aad})
    assert base64.b64decode(opened["data"]["plaintext"]) == MESSAGE
    key = base64.b64decode(vault.read("transit/export/encryption-key/siv")["data"]["keys"]["1"])
    body = _body(ciphertext)
    assert AESGCMSIV(key).decrypt(body[:12], body[12:], b"header") == MESSAGE


def test_derived_convergent_gcm_siv_gives_equal_ciphertexts(vault):
    vault.write_data(
        "transit/keys/siv", data={"type": "aes256-gcm-siv", "derived": True, "convergent_encryption": True}
    )
    context = base64.b64encode(b"tenant-1").decode()
    a, b = (
        vault.write_data("transit/encrypt/siv", data={"plaintext": B64, "context": context})["data"]["ciphertext"]
        for _ in range(2)
    )
    assert a == b


def test_version_retention_across_ten_rotations(vault):
    vault.write_data("transit/keys/kept", data={"type": "chacha20-poly1305", "retain_versions": 3})
    ciphertexts = {}
    for version in range(1, 12):
        if version > 1:
            vault.write_data("transit/keys/kept/rotate", data={})
        ciphertexts[version] = vault.write_data("transit/encrypt/kept", data={"plaintext": B64})["data"]["ciphertext"]
    key = vault.read("transit/keys/kept")["data"]
    assert key["latest_version"] == 11 and key["min_decryption_version"] == 9
    assert key["retain_versions"] == 3 and key["next_rotation_retires"] == [9]
    assert sorted(key["keys"]) == ["10", "11", "9"]
    for version in (9, 10, 11):
        opened = vault.write_data("transit/decrypt/kept", data={"ciphertext": ciphertexts[version]})
        assert base64.b64decode(opened["data"]["plaintext"]) == MESSAGE
    with pytest.raises(InvalidRequest, match="ciphertext or signature version is disallowed by policy"):
        vault.write_data("transit/decrypt/kept", data={"ciphertext": ciphertexts[8]})
    # Retention set later applies from the next rotation, and min_encryption_version follows it up.
    vault.write_data("transit/keys/later", data={"type": "ecdsa-p256"})
    for _ in range(4):
        vault.write_data("transit/keys/later/rotate", data={})
    vault.write_data("transit/keys/later/config", data={"min_encryption_version": 2, "retain_versions": 2})
    assert vault.read("transit/keys/later")["data"]["next_rotation_retires"] == [1, 2, 3, 4]
    vault.write_data("transit/keys/later/rotate", data={})
    later = vault.read("transit/keys/later")["data"]
    assert (later["min_decryption_version"], later["min_encryption_version"]) == (5, 5)
    with pytest.raises(InvalidRequest, match="retain_versions must be 0"):
        vault.write_data("transit/keys/later/config", data={"retain_versions": -1})


def test_custom_metadata_on_create_config_read_and_list_filter(server, vault):
    labels = {"team": "payments", "pii": "yes"}
    vault.write_data("transit/keys/cards", data={"custom_metadata": labels})
    vault.write_data("transit/keys/orders", data={"custom_metadata": {"team": "payments"}})
    vault.write_data("transit/keys/logs", data={"custom_metadata": {"team": "platform"}})
    assert vault.read("transit/keys/cards")["data"]["custom_metadata"] == labels
    assert "custom_metadata" not in vault.read("transit/keys/vault-enc")["data"]  # unset: Vault's body

    def listed(**query):
        params = {"list": "true", **{f"metadata.{k}": v for k, v in query.items()}}
        response = requests.get(
            f"{server.url}/v1/transit/keys", params=params, headers={"X-Vault-Token": vault.token}, timeout=10
        )
        return response.json()["data"]["keys"] if response.status_code == 200 else response.status_code

    assert listed(team="payments") == ["cards", "orders"]
    assert listed(team="payments", pii="yes") == ["cards"]
    assert listed(team="nobody") == 404
    assert "vault-enc" in listed()

    # Config replaces the map whole; bad maps are refused and change nothing.
    vault.write_data("transit/keys/cards/config", data={"custom_metadata": {"team": "risk"}})
    assert vault.read("transit/keys/cards")["data"]["custom_metadata"] == {"team": "risk"}
    too_many = {f"k{i}": "v" for i in range(65)}
    for bad, message in (
        (too_many, "at most 64 entries"),
        ({"team": "x" * 513}, "at most 512 characters"),
        ({"": "empty key"}, "1 to 128 characters"),
    ):
        with pytest.raises(InvalidRequest, match=message):
            vault.write_data("transit/keys/cards/config", data={"custom_metadata": bad})
    assert vault.read("transit/keys/cards")["data"]["custom_metadata"] == {"team": "risk"}


def test_backup_and_restore_keep_retention_and_metadata(vault):
    vault.write_data(
        "transit/keys/kept",
        data={
            "exportable": True,
            "allow_plaintext_backup": True,
            "retain_versions": 2,
            "custom_metadata": {"team": "payments"},
        },
    )
    backup = vault.read("transit/backup/kept")["data"]["backup"]
    vault.write_data("transit/restore/copy", data={"backup": backup})
    copy = vault.read("transit/keys/copy")["data"]
    assert copy["retain_versions"] == 2 and copy["custom_metadata"] == {"team": "payments"}


def test_cmac_over_http_with_an_imported_key_matches_cryptography(vault):
    """A known AES key goes in by BYOK (wrapped for the service's wrapping key, as Vault's docs do it); the
    service's CMAC then equals cryptography's, and verify takes it back."""
    import os

    from cryptography.hazmat.primitives import cmac, hashes
    from cryptography.hazmat.primitives.asymmetric import padding
    from cryptography.hazmat.primitives.ciphers import algorithms
    from cryptography.hazmat.primitives.keywrap import aes_key_wrap_with_padding

    known = os.urandom(32)
    wrapping = serialization.load_pem_public_key(vault.read("transit/wrapping_key")["data"]["public_key"].encode())
    ephemeral = os.urandom(32)
    oaep = padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None)
    blob = wrapping.encrypt(ephemeral, oaep) + aes_key_wrap_with_padding(ephemeral, known)
    vault.write_data(
        "transit/keys/tagger/import", data={"type": "aes256-cmac", "ciphertext": base64.b64encode(blob).decode()}
    )
    mac = cmac.CMAC(algorithms.AES(known))
    mac.update(MESSAGE)
    expected = mac.finalize()

    tagged = vault.write_data("transit/cmac/tagger", data={"input": B64})["data"]
    assert tagged["key_version"] == 1 and _body(tagged["cmac"]) == expected
    short = vault.write_data("transit/cmac/tagger/8", data={"input": B64})["data"]["cmac"]
    assert _body(short) == expected[:8]
    batch = [{"input": B64, "cmac": tagged["cmac"]}, {"input": B64, "cmac": short}, {"input": "", "cmac": short}]
    results = vault.write_data("transit/verify/tagger", data={"batch_input": batch})["data"]["batch_results"]
    assert [r["valid"] for r in results] == [True, False, False]  # a short tag only with mac_length
    truncated = vault.write_data("transit/verify/tagger", data={"batch_input": batch[1:], "mac_length": 8})
    assert [r["valid"] for r in truncated["data"]["batch_results"]] == [True, False]
    with pytest.raises(InvalidRequest, match="mac_length must be 8 to 16 bytes"):
        vault.write_data("transit/cmac/tagger", data={"input": B64, "mac_length": 20})
    with pytest.raises(InvalidRequest, match="CMAC is not supported for key type chacha20-poly1305"):
        vault.write_data("transit/cmac/vault-enc", data={"input": B64})
    with pytest.raises(InvalidRequest):
        vault.write_data("transit/encrypt/tagger", data={"plaintext": B64})


@pytest.mark.parametrize("key_type", ["hybrid-ml-dsa-65-ecdsa-p256", "hybrid-ml-dsa-65-ed25519"])
def test_hybrid_signatures_verify_only_if_both_parts_do(vault, key_type):
    from cryptography.hazmat.primitives.asymmetric import ec

    vault.write_data("transit/keys/both", data={"type": key_type})
    key = vault.read("transit/keys/both")["data"]
    assert key["type"] == key_type and key["supports_signing"]
    pems = key["keys"]["1"]["public_key"].split("-----END PUBLIC KEY-----\n")
    pq_public = serialization.load_pem_public_key((pems[0] + "-----END PUBLIC KEY-----\n").encode())
    classical_public = serialization.load_pem_public_key((pems[1] + "-----END PUBLIC KEY-----\n").encode())
    assert isinstance(pq_public, mldsa.MLDSA65PublicKey)

    signed = vault.write_data("transit/sign/both", data={"input": B64})["data"]["signature"]
    packed = _body(signed)
    size = int.from_bytes(packed[:4], "big")
    pq_signature, classical_signature = packed[4 : 4 + size], packed[4 + size :]
    # Independently, each part with cryptography and the key's own public keys.
    pq_public.verify(pq_signature, MESSAGE)
    if key_type.endswith("ecdsa-p256"):
        from cryptography.hazmat.primitives import hashes

        classical_public.verify(classical_signature, MESSAGE, ec.ECDSA(hashes.SHA256()))
    else:
        classical_public.verify(classical_signature, MESSAGE)

    def verify(signature_body: bytes) -> bool:
        value = "vault:v1:" + base64.b64encode(signature_body).decode()
        return vault.write_data("transit/verify/both", data={"input": B64, "signature": value})["data"]["valid"]

    assert verify(packed) is True
    flipped_pq = bytearray(packed)
    flipped_pq[10] ^= 1
    flipped_classical = bytearray(packed)
    flipped_classical[-3] ^= 1
    assert verify(bytes(flipped_pq)) is False
    assert verify(bytes(flipped_classical)) is False
    assert verify(packed[: 4 + size]) is False  # the ML-DSA part alone is not enough


def test_hybrid_ecdsa_parts_are_low_s_and_their_high_s_twin_does_not_verify(vault):
    """ECDSA's (r, n - s) verifies whenever (r, s) does; this format makes and takes only the low one, so a
    signature of it has no second valid encoding."""
    from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature

    order = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551  # P-256's n
    vault.write_data("transit/keys/twin", data={"type": "hybrid-ml-dsa-65-ecdsa-p256"})

    def verify(signature_body: bytes) -> bool:
        value = "vault:v1:" + base64.b64encode(signature_body).decode()
        return vault.write_data("transit/verify/twin", data={"input": B64, "signature": value})["data"]["valid"]

    # ECDSA's s is high half the time: enough signatures that one in a million runs would see none.
    for _ in range(20):
        packed = _body(vault.write_data("transit/sign/twin", data={"input": B64})["data"]["signature"])
        size = int.from_bytes(packed[:4], "big")
        pq_part, classical = packed[: 4 + size], packed[4 + size :]
        r, s = decode_dss_signature(classical)
        assert s <= order // 2
        assert verify(packed) is True
        assert verify(pq_part + encode_dss_signature(r, order - s)) is False


def test_review_fixes_cmac_full_tag_and_url_length(vault):
    """A CMAC is checked at its full 16 bytes unless mac_length asks for less; a bad URL length is a 400."""
    vault.write_data("transit/keys/tagger", data={"type": "aes256-cmac"})
    full = vault.write_data("transit/cmac/tagger", data={"input": B64})["data"]["cmac"]
    prefix, body = full.rsplit(":", 1)
    short = f"{prefix}:{base64.b64encode(base64.b64decode(body)[:8]).decode()}"
    assert vault.write_data("transit/verify/tagger", data={"input": B64, "cmac": short})["data"]["valid"] is False
    ok = vault.write_data("transit/verify/tagger", data={"input": B64, "cmac": short, "mac_length": 8})
    assert ok["data"]["valid"] is True
    for bad in ("%C2%B2", "9" * 5000, "1x"):
        with pytest.raises(InvalidRequest, match="mac_length in the URL must be a number of bytes"):
            vault.adapter.post(f"/v1/transit/cmac/tagger/{bad}", json={"input": B64})


def test_review_fixes_metadata_filter_needs_read_and_key_ids_are_never_reused(server, vault):
    """The metadata filter answers only about keys the caller may read; a key deleted and made again gets a
    new id, so its usage is its own (an old reservation never covers the new key's uses)."""
    vault.write_data("transit/keys/secretproj", data={"custom_metadata": {"project": "merger"}})
    vault.write_data("transit/keys/open", data={"custom_metadata": {"project": "merger"}})
    vault.sys.create_or_update_acl_policy(
        "lister",
        'path "transit/keys/" { capabilities = ["list"] }\npath "transit/keys/open" { capabilities = ["read"] }',
    )
    token = server.call(server.kms.tokens.create(["lister"], timedelta(hours=1)))[0]
    response = requests.get(
        f"{server.url}/v1/transit/keys",
        params={"list": "true", "metadata.project": "merger"},
        headers={"X-Vault-Token": token},
        timeout=10,
    )
    assert response.status_code == 200 and response.json()["data"]["keys"] == ["open"]

    vault.write_data("transit/keys/u1", data={})
    first_id = server.call(server.kms.keys.get("u1", ())).key_id
    vault.write_data("transit/encrypt/u1", data={"plaintext": B64})
    vault.write_data("transit/keys/u1/config", data={"deletion_allowed": True})
    vault.delete("transit/keys/u1")
    vault.write_data("transit/keys/u1", data={})
    assert server.call(server.kms.keys.get("u1", ())).key_id != first_id
    for _ in range(5):
        vault.write_data("transit/encrypt/u1", data={"plaintext": B64})
    assert vault.read("transit/keys/u1")["data"]["usage"]["1"]["encryptions"] == 5
