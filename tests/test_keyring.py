"""Key versions, Vault's version rules and wire formats (pure, no I/O)."""

from datetime import UTC, datetime

import pytest
from keymaterial import ALL_TYPES, ENCRYPTION_TYPES, SIGNING_TYPES
from keymaterial import make_key as cached_key

from kms_service.errors import InvalidRequest, RefusedAsServerError
from kms_service.keyring.key import Key, KeyVersion, validate_key_name
from kms_service.keyring.settings import KeySettings
from kms_service.keyring.wire import parse_versioned
from kms_service.keytypes.base import EncryptOptions, SignOptions
from kms_service.keytypes.registry import KEY_TYPES

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


# -- every type ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("type_name", ENCRYPTION_TYPES)
def test_every_encryption_type_decrypts_every_live_version(type_name):
    key = cached_key(type_name, versions=3, min_decryption_version=2)
    ciphertext, version = key.encrypt(b"data", NO_OPTIONS)
    assert version == 3 and ciphertext.startswith("vault-kms:v3:")
    for v in (2, 3):
        ct, _ = key.encrypt(b"v", NO_OPTIONS, key_version=v)
        assert key.decrypt(ct, NO_OPTIONS) == b"v"
        assert key.decrypt(ct.replace("vault-kms:", "vault:"), NO_OPTIONS) == b"v"
    rewrapped, version = key.rewrap(key.encrypt(b"r", NO_OPTIONS, key_version=2)[0], NO_OPTIONS)
    assert version == 3 and key.decrypt(rewrapped, NO_OPTIONS) == b"r"
    with pytest.raises(InvalidRequest, match="too old"):
        key.decrypt("vault-kms:v1:AAAA", NO_OPTIONS)


@pytest.mark.parametrize("type_name", ENCRYPTION_TYPES)
def test_another_versions_ciphertext_does_not_open(type_name):
    key = cached_key(type_name, versions=2)
    ciphertext, _ = key.encrypt(b"x", NO_OPTIONS, key_version=1)
    with pytest.raises((InvalidRequest, RefusedAsServerError)):
        key.decrypt(ciphertext.replace(":v1:", ":v2:"), NO_OPTIONS)


@pytest.mark.parametrize("type_name", SIGNING_TYPES)
def test_every_signing_type_signs_and_verifies(type_name):
    key = cached_key(type_name, versions=2, min_encryption_version=2, min_decryption_version=1)
    signature, version = key.sign(b"msg", SignOptions())
    assert version == 2
    assert key.verify(b"msg", signature, SignOptions()) is True
    assert key.verify(b"msG", signature, SignOptions()) is False
    assert key.verify(b"msg", signature.replace(":v2:", ":v1:"), SignOptions()) is False  # another version's key
    with pytest.raises(InvalidRequest, match="^requested version for signing is less than the minimum encryption key"):
        key.sign(b"msg", SignOptions(), key_version=1)


@pytest.mark.parametrize("type_name", [t for t in ALL_TYPES if t not in SIGNING_TYPES])
def test_types_that_cannot_sign(type_name):
    key = cached_key(type_name)
    with pytest.raises(InvalidRequest, match=f"^key type {type_name} does not support signing$"):
        key.sign(b"x", SignOptions())
    with pytest.raises(InvalidRequest, match=f"^key type {type_name} does not support verification$"):
        key.verify(b"x", "vault-kms:v1:AAAA", SignOptions())


@pytest.mark.parametrize("type_name", [t for t in ALL_TYPES if t not in ENCRYPTION_TYPES])
def test_types_that_cannot_encrypt(type_name):
    key = cached_key(type_name)
    with pytest.raises(InvalidRequest, match=f"^message encryption not supported for key type {type_name}$"):
        key.encrypt(b"x", NO_OPTIONS)
    with pytest.raises(InvalidRequest, match=f"^message decryption not supported for key type {type_name}$"):
        key.decrypt("vault-kms:v1:AAAA", NO_OPTIONS)


def test_imported_key_flag_follows_the_latest_version():
    kt = KEY_TYPES["aes256-gcm96"]
    imported = kt.import_key(bytes(32))
    assert cached_key("aes256-gcm96", materials={1: imported}).imported is True
    assert cached_key("aes256-gcm96", materials={1: imported, 2: kt.generate()}).imported is False
