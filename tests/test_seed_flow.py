"""The seed's documented flow, through hvac (Vault's own Python client), on SQLite and PostgreSQL: the flow
end to end on both databases (the files of the HTTP surface's details run on SQLite alone)."""

from __future__ import annotations

import base64

import hvac.exceptions
import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

import kms_service

SECRET = base64.b64encode(b"SECRET\n").decode()


def _b64(value: str) -> bytes:
    return base64.b64decode(value.split(":", 2)[2])


def test_manage_keys_endpoint_reads_rotates_signs_and_verifies(seed_server):
    vault = seed_server.client(seed_server.endpoint_token("manage_keys"))

    key = vault.secrets.transit.read_key("vault-sign")["data"]
    assert key["name"] == "vault-sign"
    assert key["type"] == "ecdsa-p256"
    assert key["latest_version"] == 1
    assert key["supports_signing"] is True and key["supports_encryption"] is False
    assert set(key["keys"]) == {"1"}
    assert key["keys"]["1"]["name"] == "P-256"
    assert key["keys"]["1"]["public_key"].startswith("-----BEGIN PUBLIC KEY-----")

    signed = vault.secrets.transit.sign_data("vault-sign", hash_input=SECRET, hash_algorithm="sha2-512")["data"]
    assert signed["key_version"] == 1
    assert signed["signature"].startswith("vault-kms:v1:")

    verdict = vault.secrets.transit.verify_signed_data(
        "vault-sign", hash_input=SECRET, signature=signed["signature"], hash_algorithm="sha2-512"
    )
    assert verdict["data"]["valid"] is True
    other = base64.b64encode(b"OTHER").decode()
    verdict = vault.secrets.transit.verify_signed_data(
        "vault-sign", hash_input=other, signature=signed["signature"], hash_algorithm="sha2-512"
    )
    assert verdict["data"]["valid"] is False

    # The signature is a plain ECDSA P-256 DER signature: check it without the service.
    public = serialization.load_pem_public_key(key["keys"]["1"]["public_key"].encode())
    public.verify(_b64(signed["signature"]), b"SECRET\n", ec.ECDSA(hashes.SHA512()))
    with pytest.raises(InvalidSignature):
        public.verify(_b64(signed["signature"]), b"OTHER", ec.ECDSA(hashes.SHA512()))

    rotated = vault.secrets.transit.rotate_key("vault-sign")
    assert rotated["data"]["latest_version"] == 2
    key = vault.secrets.transit.read_key("vault-sign")["data"]
    assert set(key["keys"]) == {"1", "2"}
    assert key["keys"]["1"]["public_key"] != key["keys"]["2"]["public_key"]

    signed2 = vault.secrets.transit.sign_data("vault-sign", hash_input=SECRET, hash_algorithm="sha2-512")["data"]
    assert signed2["signature"].startswith("vault-kms:v2:")
    public2 = serialization.load_pem_public_key(key["keys"]["2"]["public_key"].encode())
    public2.verify(_b64(signed2["signature"]), b"SECRET\n", ec.ECDSA(hashes.SHA512()))
    # Old signatures still verify after rotation.
    for signature in (signed["signature"], signed2["signature"]):
        assert (
            vault.secrets.transit.verify_signed_data(
                "vault-sign", hash_input=SECRET, signature=signature, hash_algorithm="sha2-512"
            )["data"]["valid"]
            is True
        )


def test_crypto_endpoint_encrypts_decrypts_rotates_and_rewraps(server):
    vault = server.client(server.endpoint_token("crypto"))

    encrypted = vault.secrets.transit.encrypt_data("vault-enc", plaintext=SECRET)["data"]
    assert encrypted["key_version"] == 1
    assert encrypted["ciphertext"].startswith("vault-kms:v1:")
    # nonce(12) ‖ ciphertext ‖ tag(16)
    assert len(_b64(encrypted["ciphertext"])) == 12 + len(b"SECRET\n") + 16

    decrypted = vault.secrets.transit.decrypt_data("vault-enc", ciphertext=encrypted["ciphertext"])["data"]
    assert decrypted["plaintext"] == SECRET

    assert vault.secrets.transit.rotate_key("vault-enc")["data"]["latest_version"] == 2

    rewrapped = vault.secrets.transit.rewrap_data("vault-enc", ciphertext=encrypted["ciphertext"])["data"]
    assert rewrapped["key_version"] == 2
    assert rewrapped["ciphertext"].startswith("vault-kms:v2:")
    assert (
        vault.secrets.transit.decrypt_data("vault-enc", ciphertext=rewrapped["ciphertext"])["data"]["plaintext"]
        == SECRET
    )
    # The old ciphertext still decrypts, and so does the Vault-prefixed spelling of it.
    assert (
        vault.secrets.transit.decrypt_data("vault-enc", ciphertext=encrypted["ciphertext"])["data"]["plaintext"]
        == SECRET
    )
    vault_spelling = "vault:" + encrypted["ciphertext"].split(":", 1)[1]
    assert vault.secrets.transit.decrypt_data("vault-enc", ciphertext=vault_spelling)["data"]["plaintext"] == SECRET
    rewrapped_again = vault.secrets.transit.rewrap_data("vault-enc", ciphertext=vault_spelling)["data"]
    assert rewrapped_again["ciphertext"].startswith("vault-kms:v2:")


def test_empty_plaintext_round_trips(server):
    vault = server.client(server.endpoint_token("crypto"))
    ciphertext = vault.secrets.transit.encrypt_data("vault-enc", plaintext="")["data"]["ciphertext"]
    assert vault.secrets.transit.decrypt_data("vault-enc", ciphertext=ciphertext)["data"]["plaintext"] == ""


def test_associated_data_binds_the_ciphertext(server):
    vault = server.client(server.endpoint_token("crypto"))
    aad = base64.b64encode(b"tenant-42").decode()
    ciphertext = vault.secrets.transit.encrypt_data("vault-enc", plaintext=SECRET, associated_data=aad)["data"][
        "ciphertext"
    ]
    plain = vault.secrets.transit.decrypt_data("vault-enc", ciphertext=ciphertext, associated_data=aad)
    assert plain["data"]["plaintext"] == SECRET
    with pytest.raises(hvac.exceptions.InvalidRequest, match="message authentication failed"):
        vault.secrets.transit.decrypt_data("vault-enc", ciphertext=ciphertext)


def test_lookup_self_and_health(seed_server):
    token = seed_server.endpoint_token("manage_keys")
    vault = seed_server.client(token)
    me = vault.auth.token.lookup_self()["data"]
    assert me["policies"] == ["admin:vault-sign", "default", "sign:vault-sign", "verify:vault-sign"]
    assert me["id"] == token
    assert 364 * 86400 < me["ttl"] <= 365 * 86400
    assert me["expire_time"].endswith("Z")
    health = vault.sys.read_health_status(method="GET")
    assert health["initialized"] is True and health["sealed"] is False
    assert health["service_version"] == "1.12"
    assert health["version"] == kms_service.VAULT_API_VERSION
    assert health["kms_service_version"] == kms_service.__version__
    assert health["type"] == "vault-kms:1.12"


def test_min_decryption_version_refuses_old_ciphertexts_and_can_move_back(server):
    vault = server.client(server.endpoint_token("crypto"))
    old = vault.secrets.transit.encrypt_data("vault-enc", plaintext=SECRET)["data"]["ciphertext"]
    vault.secrets.transit.rotate_key("vault-enc")
    vault.secrets.transit.update_key_configuration("vault-enc", min_decryption_version=2)
    key = vault.secrets.transit.read_key("vault-enc")["data"]
    assert key["min_decryption_version"] == 2 and set(key["keys"]) == {"2"}
    with pytest.raises(hvac.exceptions.InvalidRequest, match="too old"):
        vault.secrets.transit.decrypt_data("vault-enc", ciphertext=old)
    vault.secrets.transit.update_key_configuration("vault-enc", min_decryption_version=1)
    assert vault.secrets.transit.decrypt_data("vault-enc", ciphertext=old)["data"]["plaintext"] == SECRET
