"""Key versions, Vault's version rules and wire formats (pure, no I/O)."""

from datetime import UTC, datetime

import pytest

from kms_service.errors import InvalidRequest
from kms_service.keyring import Key, KeySettings, KeyVersion, parse_versioned, validate_key_name
from kms_service.keytypes import KEY_TYPES, EncryptOptions, SignOptions

NO_OPTIONS = EncryptOptions()


def make_key(type_name: str, versions: int = 3, min_dec: int = 1, min_enc: int = 0) -> Key:
    kt = KEY_TYPES[type_name]
    now = datetime.now(UTC)
    return Key(
        name="k",
        key_type=kt,
        latest_version=versions,
        settings=KeySettings(min_decryption_version=min_dec, min_encryption_version=min_enc),
        generation=1,
        versions={v: KeyVersion(v, now, kt.generate(), kt) for v in range(1, versions + 1)},
    )


def test_encrypt_uses_latest_and_decrypts_every_live_version():
    key = make_key("chacha20-poly1305")
    ciphertext, version = key.encrypt(b"data", NO_OPTIONS)
    assert version == 3 and ciphertext.startswith("vault-kms:v3:")
    for v in (1, 2, 3):
        ct, _ = key.encrypt(b"v", NO_OPTIONS, key_version=v)
        assert key.decrypt(ct, NO_OPTIONS) == b"v"


def test_version_rules():
    key = make_key("chacha20-poly1305", versions=3, min_dec=2, min_enc=2)
    old = make_key("chacha20-poly1305")
    with pytest.raises(InvalidRequest, match="less than the minimum"):
        key.encrypt(b"x", NO_OPTIONS, key_version=1)
    with pytest.raises(InvalidRequest, match="too old"):
        key.decrypt("vault-kms:v1:" + "A" * 40, NO_OPTIONS)
    with pytest.raises(InvalidRequest, match="too new"):
        key.decrypt("vault-kms:v4:" + "A" * 40, NO_OPTIONS)
    with pytest.raises(InvalidRequest, match="message authentication failed"):
        key.decrypt(old.encrypt(b"x", NO_OPTIONS)[0], NO_OPTIONS)  # another key's ciphertext: generic failure


def test_rewrap_moves_to_the_latest_version():
    key = make_key("chacha20-poly1305")
    ct, _ = key.encrypt(b"secret", NO_OPTIONS, key_version=1)
    rewrapped, version = key.rewrap(ct, NO_OPTIONS)
    assert version == 3 and key.decrypt(rewrapped, NO_OPTIONS) == b"secret"


def test_tampering_is_detected_everywhere():
    key = make_key("chacha20-poly1305", versions=1)
    ct, _ = key.encrypt(b"secret", NO_OPTIONS)
    import base64

    body = bytearray(base64.b64decode(ct.split(":")[2]))
    for i in (0, 12, len(body) - 1):  # nonce, ciphertext, tag
        flipped = bytearray(body)
        flipped[i] ^= 1
        with pytest.raises(InvalidRequest, match="message authentication failed"):
            key.decrypt("vault-kms:v1:" + base64.b64encode(bytes(flipped)).decode(), NO_OPTIONS)


@pytest.mark.parametrize("marshaling", ["asn1", "jws"])
@pytest.mark.parametrize("hash_name", ["sha1", "sha2-256", "sha2-512", "sha3-256"])
def test_sign_and_verify(marshaling, hash_name):
    key = make_key("ecdsa-p256")
    signature, version = key.sign(b"msg", SignOptions(hash_algorithm=hash_name, marshaling=marshaling))
    assert version == 3
    assert key.verify(b"msg", signature, SignOptions(hash_algorithm=hash_name, marshaling=marshaling)) is True
    assert key.verify(b"other", signature, SignOptions(hash_algorithm=hash_name, marshaling=marshaling)) is False


@pytest.mark.parametrize(
    "value, message",
    [
        ("abc", "no prefix"),
        ("vault-kms", "no prefix"),
        ("kms:v1:x", "no prefix"),
        ("vault-kms:1:x", "no prefix"),
        ("vault-kms:v1", "wrong number of fields"),
        ("vault-kms:v:x", "could not be decoded"),
        ("vault-kms:v-1:x", "could not be decoded"),
        ("vault-kms:v+1:x", "could not be decoded"),
        ("vault-kms:v 1:x", "could not be decoded"),
        ("vault-kms:v1.0:x", "could not be decoded"),
        ("vault-kms:v٣:x", "could not be decoded"),
        ("vault-kms:v2147483648:x", "could not be decoded"),
    ],
)
def test_prefix_parsing_is_strict(value, message):
    with pytest.raises(InvalidRequest, match=message):
        parse_versioned(value, "ciphertext")


def test_both_prefixes_parse():
    assert parse_versioned("vault:v12:abc", "ciphertext").version == 12
    assert parse_versioned("vault-kms:v3:abc", "ciphertext").payload == "abc"


@pytest.mark.parametrize("name", ["a", "vault-sign", "key.v2", "a_b", "k" * 128])
def test_valid_key_names(name):
    assert validate_key_name(name) == name


@pytest.mark.parametrize("name", ["", "-a", "a-", ".", "..", "a b", "key\n", "ключ", "ｋｅｙ", "a/b", "k" * 129, "a*"])
def test_invalid_key_names(name):
    with pytest.raises(InvalidRequest):
        validate_key_name(name)
