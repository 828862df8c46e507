"""Every key type and crypto option, each wire format checked independently with ``cryptography``/libsodium
on the exported key (pure, no I/O)."""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import os

import pytest
from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa, x25519
from cryptography.hazmat.primitives.asymmetric.utils import NoDigestInfo, Prehashed, encode_dss_signature
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, AESGCMSIV, ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.keywrap import aes_key_wrap_with_padding
from keymaterial import (
    AEAD_TYPES,
    ALL_TYPES,
    ECDSA_TYPES,
    ENCRYPTION_TYPES,
    HYBRID_TYPES,
    ML_DSA_TYPES,
    RSA_TYPES,
    SIGNING_TYPES,
    make_key,
    material,
)
from nacl import bindings as sodium
from nacl.exceptions import CryptoError

from kms_service.byok import unwrap_byok, wrap_byok
from kms_service.errors import InvalidRequest, RefusedAsServerError, UserError
from kms_service.keyring.key import new_datakey
from kms_service.keyring.wire import b64decode_strict
from kms_service.keytypes.asymmetric import public_key_pem
from kms_service.keytypes.base import MISSING_CONTEXT, EncryptOptions, SignOptions, parse_salt_length
from kms_service.keytypes.hybrid import _unpack
from kms_service.keytypes.registry import KEY_TYPES
from kms_service.material import Origin

NONCE_SIZES = {
    "aes128-gcm96": 12,
    "aes256-gcm96": 12,
    "aes256-gcm-siv": 12,
    "chacha20-poly1305": 12,
    "xchacha20-poly1305": 24,
}
KEY_SIZES = {
    "aes128-gcm96": 16,
    "aes256-gcm96": 32,
    "aes256-gcm-siv": 32,
    "chacha20-poly1305": 32,
    "xchacha20-poly1305": 32,
}
CMAC_KEY_SIZES = {"aes128-cmac": 16, "aes256-cmac": 32}
# HPKE private keys: raw bytes (X25519's 32; ML-KEM-768's 64-byte seed and X25519's 32).
HPKE_KEY_SIZES = {"hpke-x25519": 32, "hpke-mlkem768-x25519": 96}
COORDINATE_SIZES = {"ecdsa-p256": 32, "ecdsa-p384": 48, "ecdsa-p521": 66}
CURVES = {"ecdsa-p256": ec.SECP256R1, "ecdsa-p384": ec.SECP384R1, "ecdsa-p521": ec.SECP521R1}
RSA_BITS = {"rsa-2048": 2048, "rsa-3072": 3072, "rsa-4096": 4096}
HASHES = {
    "sha1": hashes.SHA1,
    "sha2-224": hashes.SHA224,
    "sha2-256": hashes.SHA256,
    "sha2-384": hashes.SHA384,
    "sha2-512": hashes.SHA512,
    "sha3-224": hashes.SHA3_224,
    "sha3-256": hashes.SHA3_256,
    "sha3-384": hashes.SHA3_384,
    "sha3-512": hashes.SHA3_512,
}


def payload(value: str) -> bytes:
    """The bytes after ``vault-kms:v<N>:`` (standard or URL-safe unpadded base64)."""
    text = value.split(":", 2)[2]
    if "-" in text or "_" in text or len(text) % 4:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    return base64.b64decode(text)


def exported(key, export_type: str, version: int = 1) -> str:
    return key.export(export_type, version)[str(version)]


def hkdf(ikm: bytes, info: bytes, length: int) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=None, info=info).derive(ikm)


def open_independently(type_name: str, key: bytes, body: bytes, aad: bytes | None = None) -> bytes:
    """Decrypt a ciphertext body with the library directly: nonce ‖ ciphertext ‖ tag."""
    n = NONCE_SIZES[type_name]
    nonce, sealed = body[:n], body[n:]
    if type_name == "aes256-gcm-siv":
        return AESGCMSIV(key).decrypt(nonce, sealed, aad)
    if type_name.startswith("aes"):
        return AESGCM(key).decrypt(nonce, sealed, aad)
    if type_name == "chacha20-poly1305":
        return ChaCha20Poly1305(key).decrypt(nonce, sealed, aad)
    return sodium.crypto_aead_xchacha20poly1305_ietf_decrypt(sealed, aad, nonce, key)


# -- the registry ------------------------------------------------------------------------------------------

# Vault's capability matrix (transit-api.md §2.1): enc/dec, sign, derivation, convergent, AEAD, has `keys`.
CAPABILITIES = {
    "aes128-gcm96": (True, False, True, True, True, True),
    "aes256-gcm96": (True, False, True, True, True, True),
    "chacha20-poly1305": (True, False, True, True, True, True),
    "xchacha20-poly1305": (True, False, True, True, True, True),
    "ed25519": (False, True, True, False, False, True),
    "ecdsa-p256": (False, True, False, False, False, True),
    "ecdsa-p384": (False, True, False, False, False, True),
    "ecdsa-p521": (False, True, False, False, False, True),
    "rsa-2048": (True, True, False, False, False, True),
    "rsa-3072": (True, True, False, False, False, True),
    "rsa-4096": (True, True, False, False, False, True),
    "hmac": (False, False, False, False, False, False),
    # Beyond Vault's open-source types (issue 12).
    "aes256-gcm-siv": (True, False, True, True, True, True),
    "ml-dsa-44": (False, True, False, False, False, True),
    "ml-dsa-65": (False, True, False, False, False, True),
    "ml-dsa-87": (False, True, False, False, False, True),
    "hpke-x25519": (True, False, False, False, False, True),
    "hpke-mlkem768-x25519": (True, False, False, False, False, True),
    "aes128-cmac": (False, False, False, False, False, True),
    "aes256-cmac": (False, False, False, False, False, True),
    "hybrid-ml-dsa-65-ecdsa-p256": (False, True, False, False, False, True),
    "hybrid-ml-dsa-65-ed25519": (False, True, False, False, False, True),
}


def test_every_type_is_registered():
    assert set(KEY_TYPES) == set(CAPABILITIES)


@pytest.mark.parametrize("type_name", sorted(CAPABILITIES), ids=sorted(CAPABILITIES))
def test_capability_matrix(type_name):
    kt = KEY_TYPES[type_name]
    flags = (
        kt.supports_encryption,
        kt.supports_signing,
        kt.supports_derivation,
        kt.supports_convergent_encryption,
        kt.supports_associated_data,
        kt.lists_versions,
    )
    assert flags == CAPABILITIES[type_name]
    body = make_key(type_name).body()
    assert body["supports_encryption"] == body["supports_decryption"] == CAPABILITIES[type_name][0]
    assert body["supports_signing"] == CAPABILITIES[type_name][1]
    assert body["supports_derivation"] == CAPABILITIES[type_name][2]
    assert ("keys" in body) == CAPABILITIES[type_name][5]


@pytest.mark.parametrize("type_name", ALL_TYPES, ids=ALL_TYPES)
def test_generated_material(type_name):
    m = material(type_name)
    assert len(m.hmac_key) == 32 and m.origin == Origin.GENERATED and m.has_private_key
    if type_name in KEY_SIZES:
        assert len(m.key) == KEY_SIZES[type_name] and m.public_key is None
    elif type_name == "hmac":
        assert len(m.key) == 32 and m.public_key is None
    elif type_name == "hpke-x25519":
        public = x25519.X25519PrivateKey.from_private_bytes(m.key).public_key()
        assert serialization.load_der_public_key(m.public_key).public_bytes_raw() == public.public_bytes_raw()
    elif type_name in CMAC_KEY_SIZES:
        assert len(m.key) == CMAC_KEY_SIZES[type_name] and m.public_key is None
    elif type_name in HYBRID_TYPES:  # two PKCS#8 keys, packed; no single PKIX public key
        pq, classical = _unpack(m.key)
        assert serialization.load_der_private_key(pq, None) and serialization.load_der_private_key(classical, None)
        assert m.public_key is None
    elif type_name == "hpke-mlkem768-x25519":
        assert len(m.key) == HPKE_KEY_SIZES[type_name] and m.public_key is None  # no PKIX form for the pair
    else:
        private = serialization.load_der_private_key(m.key, None)  # PKCS#8 DER
        assert serialization.load_der_public_key(m.public_key).public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        ) == private.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        if type_name in RSA_BITS:
            assert private.key_size == RSA_BITS[type_name] and private.public_key().public_numbers().e == 65537
        if type_name in CURVES:
            assert isinstance(private.curve, CURVES[type_name])


@pytest.mark.parametrize("size", [32, 33, 64, 512])
def test_hmac_key_size(size):
    assert len(KEY_TYPES["hmac"].generate(size).key) == size


def test_hmac_key_size_defaults_to_32():
    assert len(KEY_TYPES["hmac"].generate().key) == 32 and len(KEY_TYPES["hmac"].generate(0).key) == 32


@pytest.mark.parametrize("size", [31, 513, -1])
def test_hmac_key_size_bounds(size):
    with pytest.raises(InvalidRequest, match=f"^invalid key_size {size}$"):
        KEY_TYPES["hmac"].generate(size)


@pytest.mark.parametrize("type_name", [t for t in ALL_TYPES if t != "hmac"])
def test_key_size_only_for_hmac(type_name):
    with pytest.raises(InvalidRequest, match=f"^key_size is not valid for algorithm {type_name}$"):
        KEY_TYPES[type_name].generate(32)


# -- AEAD ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("aad", [b"", b"header"], ids=["no-aad", "aad"])
@pytest.mark.parametrize("type_name", AEAD_TYPES)
def test_aead_format_opens_with_the_exported_key(type_name, aad):
    key = make_key(type_name, exportable=True)
    ciphertext, version = key.encrypt(b"attack at dawn", EncryptOptions(associated_data=aad))
    assert version == 1 and ciphertext.startswith("vault-kms:v1:")
    body = payload(ciphertext)
    assert len(body) == NONCE_SIZES[type_name] + len(b"attack at dawn") + 16
    raw = base64.b64decode(exported(key, "encryption-key"))
    assert raw == material(type_name, 1).key
    assert open_independently(type_name, raw, body, aad or None) == b"attack at dawn"
    assert key.decrypt(ciphertext, EncryptOptions(associated_data=aad)) == b"attack at dawn"


@pytest.mark.parametrize("type_name", AEAD_TYPES)
def test_aead_decrypts_independently_made_ciphertexts(type_name):
    key = make_key(type_name)
    raw = material(type_name, 1).key
    nonce = bytes(range(NONCE_SIZES[type_name]))
    if type_name == "aes256-gcm-siv":
        sealed = AESGCMSIV(raw).encrypt(nonce, b"from outside", b"ad")
    elif type_name.startswith("aes"):
        sealed = AESGCM(raw).encrypt(nonce, b"from outside", b"ad")
    elif type_name == "chacha20-poly1305":
        sealed = ChaCha20Poly1305(raw).encrypt(nonce, b"from outside", b"ad")
    else:
        sealed = sodium.crypto_aead_xchacha20poly1305_ietf_encrypt(b"from outside", b"ad", nonce, raw)
    ciphertext = "vault:v1:" + base64.b64encode(nonce + sealed).decode()
    assert key.decrypt(ciphertext, EncryptOptions(associated_data=b"ad")) == b"from outside"


AUTH_FAILED = {
    "aes128-gcm96": "cipher: message authentication failed",
    "aes256-gcm96": "cipher: message authentication failed",
    "aes256-gcm-siv": "cipher: message authentication failed",
    "chacha20-poly1305": "chacha20poly1305: message authentication failed",
    "xchacha20-poly1305": "chacha20poly1305: message authentication failed",
}


@pytest.mark.parametrize("type_name", AEAD_TYPES)
def test_aead_failures(type_name):
    key = make_key(type_name)
    ciphertext, _ = key.encrypt(b"x", EncryptOptions(associated_data=b"a"))
    with pytest.raises(InvalidRequest, match=f"^{AUTH_FAILED[type_name]}$"):
        key.decrypt(ciphertext, EncryptOptions(associated_data=b"b"))
    short = "vault-kms:v1:" + base64.b64encode(b"\0" * (NONCE_SIZES[type_name] - 1)).decode()
    with pytest.raises(InvalidRequest, match="^invalid ciphertext length$"):
        key.decrypt(short, EncryptOptions())
    just_nonce = "vault-kms:v1:" + base64.b64encode(b"\0" * NONCE_SIZES[type_name]).decode()
    with pytest.raises(InvalidRequest, match=f"^{AUTH_FAILED[type_name]}$"):
        key.decrypt(just_nonce, EncryptOptions())


@pytest.mark.parametrize("type_name", AEAD_TYPES)
def test_random_nonces_differ(type_name):
    key = make_key(type_name)
    assert len({key.encrypt(b"same", EncryptOptions())[0] for _ in range(20)}) == 20


@pytest.mark.parametrize("aad", [b"", b"header"], ids=["no-aad", "aad"])
@pytest.mark.parametrize("type_name", AEAD_TYPES)
def test_encrypt_many_is_encrypt_of_each_with_its_own_random_nonce(type_name, aad):
    """One draw of nonces for the batch: each body opens with the exported key on its own, and no two
    bodies share a nonce."""
    key = make_key(type_name, exportable=True)
    plaintexts = [f"item {i}".encode() for i in range(300)] + [b""]
    ciphertexts, version = key.encrypt_many(plaintexts, EncryptOptions(associated_data=aad))
    assert version == 1 and len(ciphertexts) == len(plaintexts)
    raw = base64.b64decode(exported(key, "encryption-key"))
    size = NONCE_SIZES[type_name]
    bodies = [payload(c) for c in ciphertexts]
    assert len({body[:size] for body in bodies}) == len(bodies)
    for plaintext, ciphertext, body in zip(plaintexts, ciphertexts, bodies, strict=True):
        assert ciphertext.startswith("vault-kms:v1:")
        assert len(body) == size + len(plaintext) + 16
        assert open_independently(type_name, raw, body, aad or None) == plaintext
        assert key.decrypt(ciphertext, EncryptOptions(associated_data=aad)) == plaintext


@pytest.mark.parametrize("type_name", AEAD_TYPES)
def test_encrypt_many_refuses_what_encrypt_refuses_and_keeps_convergence(type_name):
    derived = make_key(type_name, derived=True, convergent_encryption=True)
    with pytest.raises(InvalidRequest) as many_error:
        derived.encrypt_many([b"a", b"b"], EncryptOptions())
    with pytest.raises(InvalidRequest) as one_error:
        derived.encrypt(b"a", EncryptOptions())
    assert many_error.value.message == one_error.value.message
    same, _ = derived.encrypt_many([b"a", b"a", b"b"], EncryptOptions(context=b"tenant"))
    assert same[0] == same[1] == derived.encrypt(b"a", EncryptOptions(context=b"tenant"))[0] != same[2]


@pytest.mark.parametrize("type_name", [*ENCRYPTION_TYPES, "ed25519", "hmac"])
def test_decrypt_many_is_decrypt_of_each_and_refuses_what_it_refuses(type_name):
    """Each plaintext as ``decrypt`` gives it, None exactly where ``decrypt`` raises (the batch then asks
    ``decrypt`` for that item's error): tampered, short, bad base64, bad prefix, too new, disallowed by
    min_decryption_version, a version trimmed away, another key's, associated data missing or wrong; and the
    whole batch refused for options the key refuses (a derived key without a context)."""
    for settings in ({}, {"derived": True}):
        if settings and not KEY_TYPES[type_name].supports_derivation:
            continue
        # Version 1 trimmed away (no material), decryption from version 2 on.
        kept = {v: material(type_name, v) for v in (2, 3)}
        key = make_key(type_name, materials=kept, min_decryption_version=1, **settings)
        for options in (
            EncryptOptions(),
            EncryptOptions(associated_data=b"aad"),
            EncryptOptions(context=b"c"),
            EncryptOptions(associated_data=b"aad", context=b"c"),
        ):
            _decrypt_many_matches_decrypt(type_name, key, options)


def _decrypt_many_matches_decrypt(type_name: str, key, options: EncryptOptions) -> None:
    values: list[str] = []
    made_with = options
    if key.key_type.supports_encryption:
        try:
            for version in (2, 3, 3):
                values.append(key.encrypt(os.urandom(version * 5), made_with, version)[0])
        except UserError:  # options this key refuses to encrypt with (a derived key without a context)
            made_with = EncryptOptions(context=b"c")
            values = [key.encrypt(os.urandom(version * 5), made_with, version)[0] for version in (2, 3, 3)]
        other = make_key(type_name, materials={2: material(type_name, 7)}, **_settings_of(key))
        body = payload(values[0])
        values += [
            "vault-kms:v2:" + base64.b64encode(body[:-1] + bytes([body[-1] ^ 1])).decode(),  # tampered
            "vault-kms:v2:" + base64.b64encode(body[:5]).decode(),  # shorter than a nonce
            values[1].replace("vault-kms:", "vault:"),  # Vault's prefix
            values[2] + "\n",  # base64 with a trailing newline (Go skips it)
            other.encrypt(b"another key's", made_with, 2)[0],
        ]
    values += [
        "vault-kms:v2:%%%%",
        "vault-kms:v2:" + base64.b64encode(b"x" * 40).decode()[:-1],
        "vault-kms:v4:" + base64.b64encode(b"x" * 40).decode(),  # too new
        "vault-kms:v1:" + base64.b64encode(b"x" * 40).decode(),  # trimmed away
        "vault-kms:v9999999999:AAAA",
        "vault-kms:v02:AAAA",
        "vault:2:AAAA",
        "nonsense",
        "",
    ]

    def alone(value: str, with_options: EncryptOptions) -> bytes | None:
        try:
            return key.decrypt(value, with_options)
        except UserError:  # RSA's failures are RefusedAsServerError (Vault's 500), a user error too
            return None

    for with_options in (options, made_with, EncryptOptions(associated_data=b"wrong", context=options.context)):
        assert key.decrypt_many(values, with_options) == [alone(value, with_options) for value in values]
    if key.key_type.supports_encryption:
        assert None not in key.decrypt_many(values[:3], made_with)  # the fast path opens what it should


def _settings_of(key) -> dict:
    return {"derived": True} if key.settings.derived else {}


@pytest.mark.parametrize("type_name", ["chacha20-poly1305", "hmac", "ed25519", "rsa-2048"])
def test_hmac_many_is_hmac_of_each_and_refuses_what_it_refuses(type_name):
    key = make_key(type_name, versions=3, min_encryption_version=2)
    inputs = [b"", b"x", os.urandom(48), os.urandom(1000)]
    for algorithm in ("sha2-256", "sha2-512", "sha3-256"):
        for version in (0, 2, 3):
            values, used = key.hmac_many(inputs, algorithm, version)
            assert values == [key.hmac(data, algorithm, version)[0] for data in inputs]
            assert used == key.hmac(b"", algorithm, version)[1]
    for algorithm, version in (("md5", 0), ("sha2-256", 1), ("sha2-256", 4)):
        with pytest.raises(InvalidRequest) as many:
            key.hmac_many(inputs, algorithm, version)
        with pytest.raises(InvalidRequest) as one:
            key.hmac(inputs[0], algorithm, version)
        assert many.value.message == one.value.message


# -- derived keys and convergent encryption ------------------------------------------------------------------


@pytest.mark.parametrize("type_name", AEAD_TYPES)
def test_derived_key_is_hkdf_of_the_version_key(type_name):
    key = make_key(type_name, derived=True, exportable=True)
    ciphertext, _ = key.encrypt(b"per tenant", EncryptOptions(context=b"tenant-1"))
    raw = base64.b64decode(exported(key, "encryption-key"))
    derived = hkdf(raw, b"tenant-1", KEY_SIZES[type_name])
    assert open_independently(type_name, derived, payload(ciphertext)) == b"per tenant"
    with pytest.raises((InvalidTag, CryptoError)):
        open_independently(type_name, raw, payload(ciphertext))
    assert key.decrypt(ciphertext, EncryptOptions(context=b"tenant-1")) == b"per tenant"
    with pytest.raises(InvalidRequest, match="message authentication failed"):
        key.decrypt(ciphertext, EncryptOptions(context=b"tenant-2"))
    body = key.body()
    assert body["derived"] is True and body["kdf"] == "hkdf_sha256" and body["convergent_encryption"] is False


@pytest.mark.parametrize("context", [None, b""], ids=["absent", "empty"])
@pytest.mark.parametrize("type_name", [*AEAD_TYPES, "ed25519"])
def test_derived_keys_need_a_context(type_name, context):
    key = make_key(type_name, derived=True)
    with pytest.raises(InvalidRequest) as excinfo:
        if type_name == "ed25519":
            key.sign(b"x", SignOptions(context=context))
        else:
            key.encrypt(b"x", EncryptOptions(context=context))
    assert excinfo.value.message == MISSING_CONTEXT
    assert MISSING_CONTEXT.startswith("missing 'context' for key derivation; the key was created using a derived key")


@pytest.mark.parametrize("type_name", ["aes256-gcm96", "ed25519"])
def test_a_context_sent_to_a_key_that_is_not_derived_is_ignored(type_name):
    key = make_key(type_name)
    if type_name == "ed25519":
        signature, _ = key.sign(b"x", SignOptions(context=b"ignored"))
        assert key.verify(b"x", signature, SignOptions())
    else:
        ciphertext, _ = key.encrypt(b"x", EncryptOptions(context=b"ignored"))
        assert open_independently(type_name, material(type_name, 1).key, payload(ciphertext)) == b"x"


@pytest.mark.parametrize("type_name", AEAD_TYPES)
def test_convergent_encryption(type_name):
    key = make_key(type_name, derived=True, convergent_encryption=True)
    raw = material(type_name, 1).key

    def encrypt(plaintext: bytes, context: bytes) -> str:
        return key.encrypt(plaintext, EncryptOptions(context=context))[0]

    first = encrypt(b"ssn-123", b"ctx")
    assert encrypt(b"ssn-123", b"ctx") == first
    assert encrypt(b"ssn-124", b"ctx") != first
    assert encrypt(b"ssn-123", b"other") != first
    # Recomputed independently: HKDF yields key ‖ nonce key; nonce = HMAC-SHA256(nonce key, plaintext)[:n].
    size, n = KEY_SIZES[type_name], NONCE_SIZES[type_name]
    out = hkdf(raw, b"ctx", size + 32)
    body = payload(first)
    assert body[:n] == hmac.new(out[size:], b"ssn-123", hashlib.sha256).digest()[:n]
    assert open_independently(type_name, out[:size], body) == b"ssn-123"
    assert key.decrypt(first, EncryptOptions(context=b"ctx")) == b"ssn-123"
    body = key.body()
    assert body["convergent_encryption"] is True and body["convergent_encryption_version"] == -1


def test_convergent_ciphertexts_differ_across_versions():
    key = make_key("aes256-gcm96", versions=2, derived=True, convergent_encryption=True)
    one = key.encrypt(b"p", EncryptOptions(context=b"c"), key_version=1)[0]
    two = key.encrypt(b"p", EncryptOptions(context=b"c"), key_version=2)[0]
    assert one.split(":")[2] != two.split(":")[2]


def test_a_non_convergent_derived_key_uses_random_nonces():
    key = make_key("aes256-gcm96", derived=True)
    assert key.encrypt(b"p", EncryptOptions(context=b"c"))[0] != key.encrypt(b"p", EncryptOptions(context=b"c"))[0]


def test_rewrap_keeps_the_context_and_takes_another_padding():
    key = make_key("aes256-gcm96", versions=2, derived=True)
    old, _ = key.encrypt(b"p", EncryptOptions(context=b"c"), key_version=1)
    new, version = key.rewrap(old, EncryptOptions(context=b"c"))
    assert version == 2 and key.decrypt(new, EncryptOptions(context=b"c")) == b"p"
    rsa_key = make_key("rsa-2048")
    old, _ = rsa_key.encrypt(b"p", EncryptOptions(padding_scheme="pkcs1v15"))
    new, _ = rsa_key.rewrap(old, EncryptOptions(padding_scheme="pkcs1v15"), encrypt_options=EncryptOptions())
    assert rsa_key.decrypt(new, EncryptOptions(padding_scheme="oaep")) == b"p"


# -- RSA encryption ------------------------------------------------------------------------------------------


def rsa_private(key) -> rsa.RSAPrivateKey:
    pem = exported(key, "encryption-key")
    assert pem.startswith("-----BEGIN RSA PRIVATE KEY-----\n") and pem.endswith("-----END RSA PRIVATE KEY-----\n")
    return serialization.load_pem_private_key(pem.encode(), None)


OAEP_SHA256 = padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None)


@pytest.mark.parametrize("scheme", ["", "oaep", "pkcs1v15"], ids=["default", "oaep", "pkcs1v15"])
@pytest.mark.parametrize("type_name", RSA_TYPES)
def test_rsa_encryption_format(type_name, scheme):
    key = make_key(type_name, exportable=True)
    ciphertext, _ = key.encrypt(b"wrapped", EncryptOptions(padding_scheme=scheme))
    body = payload(ciphertext)
    assert len(body) == RSA_BITS[type_name] // 8
    pad = padding.PKCS1v15() if scheme == "pkcs1v15" else OAEP_SHA256
    assert rsa_private(key).decrypt(body, pad) == b"wrapped"
    assert key.decrypt(ciphertext, EncryptOptions(padding_scheme=scheme)) == b"wrapped"
    # And the other way: a ciphertext made with the public key alone.
    public = serialization.load_pem_public_key(exported(key, "public-key").encode())
    outside = "vault:v1:" + base64.b64encode(public.encrypt(b"outside", pad)).decode()
    assert key.decrypt(outside, EncryptOptions(padding_scheme=scheme)) == b"outside"


def test_rsa_encryption_errors():
    key = make_key("rsa-2048")
    with pytest.raises(
        RefusedAsServerError, match="^failed to RSA encrypt the plaintext: crypto/rsa: message too long"
    ):
        key.encrypt(b"x" * 300, EncryptOptions())
    garbage = "vault-kms:v1:" + base64.b64encode(b"\1" * 256).decode()
    with pytest.raises(
        RefusedAsServerError, match="^failed to RSA decrypt the ciphertext: crypto/rsa: decryption error$"
    ):
        key.decrypt(garbage, EncryptOptions())
    with pytest.raises(InvalidRequest, match="^associated_data provided for non-AEAD cipher suite rsa-2048$"):
        key.encrypt(b"x", EncryptOptions(associated_data=b"a"))


def test_rsa_pkcs1v15_decryption_rejects_implicitly():
    # OpenSSL answers a bad PKCS#1 v1.5 padding with random bytes (no padding oracle), where Go errors.
    key = make_key("rsa-2048")
    good, _ = key.encrypt(b"secret", EncryptOptions(padding_scheme="pkcs1v15"))
    body = bytearray(payload(good))
    body[-1] ^= 1
    tampered = "vault-kms:v1:" + base64.b64encode(bytes(body)).decode()
    assert key.decrypt(tampered, EncryptOptions(padding_scheme="pkcs1v15")) != b"secret"


@pytest.mark.parametrize(
    ("type_name", "scheme", "message"),
    [
        ("rsa-2048", "OAEP", "unknown padding scheme"),
        ("rsa-2048", "pss", "unknown padding scheme"),
        ("aes256-gcm96", "oaep", "unsupported key type aes256-gcm96 for padding scheme"),
        ("aes256-gcm96", "bogus", "unknown padding scheme"),
    ],
)
def test_padding_scheme_errors(type_name, scheme, message):
    key = make_key(type_name)
    with pytest.raises(InvalidRequest, match=f"^{message}$"):
        key.encrypt(b"x", EncryptOptions(padding_scheme=scheme))
    with pytest.raises(InvalidRequest, match=f"^{message}$"):
        key.decrypt("vault-kms:v1:AAAA", EncryptOptions(padding_scheme=scheme))


# -- signatures ----------------------------------------------------------------------------------------------


def public_key_of(key):
    text = exported(key, "public-key")
    if key.key_type.name == "ed25519":
        return ed25519.Ed25519PublicKey.from_public_bytes(base64.b64decode(text))
    return serialization.load_pem_public_key(text.encode())


@pytest.mark.parametrize("marshaling", ["asn1", "jws"])
@pytest.mark.parametrize("hash_name", sorted(HASHES))
@pytest.mark.parametrize("type_name", ECDSA_TYPES)
def test_ecdsa_signatures_verify_with_cryptography(type_name, hash_name, marshaling):
    key = make_key(type_name)
    signature, _ = key.sign(b"message", SignOptions(hash_algorithm=hash_name, marshaling=marshaling))
    raw = payload(signature)
    if marshaling == "jws":
        assert "=" not in signature and "+" not in signature and "/" not in signature
        size = COORDINATE_SIZES[type_name]
        assert len(raw) == 2 * size
        raw = encode_dss_signature(int.from_bytes(raw[:size], "big"), int.from_bytes(raw[size:], "big"))
    public_key_of(key).verify(raw, b"message", ec.ECDSA(HASHES[hash_name]()))
    options = SignOptions(hash_algorithm=hash_name, marshaling=marshaling)
    assert key.verify(b"message", signature, options) is True
    assert key.verify(b"messagE", signature, options) is False


@pytest.mark.parametrize("type_name", ECDSA_TYPES)
def test_ecdsa_prehashed_and_outside_signatures(type_name):
    key = make_key(type_name, exportable=True)
    digest = hashlib.sha384(b"m").digest()
    signature, _ = key.sign(digest, SignOptions(hash_algorithm="sha2-384", prehashed=True))
    public_key_of(key).verify(payload(signature), b"m", ec.ECDSA(hashes.SHA384()))
    public_key_of(key).verify(payload(signature), digest, ec.ECDSA(Prehashed(hashes.SHA384())))
    pem = exported(key, "signing-key")
    assert pem.startswith("-----BEGIN EC PRIVATE KEY-----\n") and pem.endswith("-----END EC PRIVATE KEY-----")
    private = serialization.load_pem_private_key(pem.encode(), None)
    outside = "vault:v1:" + base64.b64encode(private.sign(b"m", ec.ECDSA(hashes.SHA256()))).decode()
    assert key.verify(b"m", outside, SignOptions()) is True


def test_ecdsa_prehashed_input_must_be_a_digest_of_the_named_hash():
    key = make_key("ecdsa-p256")
    with pytest.raises(InvalidRequest, match="^prehashed input must be a 32-byte sha2-256 digest$"):
        key.sign(b"short", SignOptions(prehashed=True))
    with pytest.raises(InvalidRequest, match="^prehashed input must be a 48-byte sha2-384 digest$"):
        key.verify(b"short", "vault-kms:v1:AAAA", SignOptions(prehashed=True, hash_algorithm="sha2-384"))


@pytest.mark.parametrize("length", [0, 5, 32, 64])
def test_ecdsa_hash_none_takes_any_length(length):
    # As Go's ecdsa.Sign: the leftmost bits of the input are used, whatever its length.
    key = make_key("ecdsa-p256")
    options = SignOptions(hash_algorithm="none", prehashed=True, signature_algorithm="pkcs1v15")
    data = bytes(range(length))
    signature, _ = key.sign(data, options)
    assert key.verify(data, signature, options) is True


def test_ecdsa_asn1_errors():
    key = make_key("ecdsa-p256")
    signature, _ = key.sign(b"m", SignOptions())
    der = payload(signature)
    extra = "vault-kms:v1:" + base64.b64encode(der + b"\0").decode()
    with pytest.raises(InvalidRequest, match="^supplied signature contains extra data$"):
        key.verify(b"m", extra, SignOptions())
    for bad in (b"", b"\x30\x00", b"garbage", der[:-1]):
        with pytest.raises(InvalidRequest, match="^supplied signature is invalid$"):
            key.verify(b"m", "vault-kms:v1:" + base64.b64encode(bad).decode(), SignOptions())
    # JWS is split in half whatever its length; a wrong length is just not valid.
    assert key.verify(b"m", "vault-kms:v1:AAAA", SignOptions(marshaling="jws")) is False


PSS_SALTS = {
    "auto": padding.PSS.MAX_LENGTH,
    "0": padding.PSS.MAX_LENGTH,
    "hash": padding.PSS.DIGEST_LENGTH,
    "-1": padding.PSS.DIGEST_LENGTH,
    "20": 20,
    "1": 1,
}


@pytest.mark.parametrize("salt", sorted(PSS_SALTS))
@pytest.mark.parametrize("hash_name", ["sha1", "sha2-256", "sha2-512", "sha3-256"])
@pytest.mark.parametrize("type_name", RSA_TYPES)
def test_rsa_pss(type_name, hash_name, salt):
    key = make_key(type_name)
    options = SignOptions(hash_algorithm=hash_name, salt_length=salt)
    signature, _ = key.sign(b"message", options)
    algorithm = HASHES[hash_name]()
    # Checked with the exact salt length: a wrong one fails (OpenSSL checks it when given).
    pss = padding.PSS(mgf=padding.MGF1(algorithm), salt_length=PSS_SALTS[salt])
    public_key_of(key).verify(payload(signature), b"message", pss, algorithm)
    assert key.verify(b"message", signature, options) is True
    assert key.verify(b"message", signature, SignOptions(hash_algorithm=hash_name, salt_length="auto")) is True
    assert key.verify(b"other", signature, options) is False


def test_rsa_pss_salt_is_checked_exactly_on_verify():
    key = make_key("rsa-2048")
    signature, _ = key.sign(b"m", SignOptions(salt_length="hash"))
    assert key.verify(b"m", signature, SignOptions(salt_length="hash")) is True
    assert key.verify(b"m", signature, SignOptions(salt_length="20")) is False
    assert key.verify(b"m", signature, SignOptions(salt_length="auto")) is True


@pytest.mark.parametrize("hash_name", ["sha1", "sha2-224", "sha2-256", "sha2-384", "sha2-512", "sha3-384"])
@pytest.mark.parametrize("type_name", RSA_TYPES)
def test_rsa_pkcs1v15(type_name, hash_name):
    key = make_key(type_name)
    options = SignOptions(hash_algorithm=hash_name, signature_algorithm="pkcs1v15")
    signature, _ = key.sign(b"message", options)
    algorithm = HASHES[hash_name]()
    public_key_of(key).verify(payload(signature), b"message", padding.PKCS1v15(), algorithm)
    assert key.verify(b"message", signature, options) is True
    assert key.verify(b"message", signature, SignOptions(hash_algorithm=hash_name)) is False  # not PSS


@pytest.mark.parametrize("scheme", ["pss", "pkcs1v15"])
def test_rsa_prehashed(scheme):
    key = make_key("rsa-3072")
    digest = hashlib.sha256(b"m").digest()
    options = SignOptions(prehashed=True, signature_algorithm=scheme)
    signature, _ = key.sign(digest, options)
    pad = padding.PKCS1v15() if scheme == "pkcs1v15" else padding.PSS(padding.MGF1(hashes.SHA256()), padding.PSS.AUTO)
    public_key_of(key).verify(payload(signature), b"m", pad, hashes.SHA256())
    assert key.verify(digest, signature, options) is True
    assert key.verify(digest[:-1], signature, options) is False
    message = "crypto/rsa: input must be hashed message" if scheme == "pkcs1v15" else "with given hash"
    with pytest.raises(InvalidRequest, match=message):
        key.sign(b"not a digest", options)


def test_rsa_hash_none_is_raw_pkcs1v15():
    key = make_key("rsa-2048")
    options = SignOptions(hash_algorithm="none", prehashed=True, signature_algorithm="pkcs1v15")
    signature, _ = key.sign(b"any bytes, no DigestInfo", options)
    recovered = public_key_of(key).recover_data_from_signature(payload(signature), padding.PKCS1v15(), NoDigestInfo())
    assert recovered == b"any bytes, no DigestInfo"
    assert key.verify(b"any bytes, no DigestInfo", signature, options) is True
    assert key.verify(b"other bytes", signature, options) is False


def test_ecdsa_hash_none_signs_the_input_as_digest():
    key = make_key("ecdsa-p384")
    digest = hashlib.sha384(b"m").digest()
    options = SignOptions(hash_algorithm="none", prehashed=True, signature_algorithm="pkcs1v15")
    signature, _ = key.sign(digest, options)
    public_key_of(key).verify(payload(signature), b"m", ec.ECDSA(hashes.SHA384()))


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (SignOptions(hash_algorithm="none"), "requires both prehashed=true and signature_algorithm=pkcs1v15"),
        (SignOptions(hash_algorithm="none", prehashed=True), "requires both"),
        (SignOptions(hash_algorithm="none", signature_algorithm="pkcs1v15"), "requires both"),
        (SignOptions(hash_algorithm="md5"), "^invalid hash algorithm$"),
        (SignOptions(hash_algorithm="SHA2-256"), "^invalid hash algorithm$"),
        (SignOptions(marshaling="der"), "^invalid marshaling type$"),
        (SignOptions(salt_length="big"), "^salt length neither 'auto', 'hash', nor an int$"),
        (SignOptions(salt_length="-2"), "^salt length is invalid: -2$"),
    ],
    ids=["none-alone", "none-pss", "none-not-prehashed", "md5", "case", "marshaling", "salt-word", "salt-negative"],
)
@pytest.mark.parametrize("type_name", ["rsa-2048", "ecdsa-p256", "ed25519"])
def test_sign_option_errors(type_name, options, message):
    key = make_key(type_name)
    with pytest.raises(InvalidRequest, match=message):
        key.sign(b"x", options)
    with pytest.raises(InvalidRequest, match=message):
        key.verify(b"x", "vault-kms:v1:AAAA", options)


@pytest.mark.parametrize(
    ("salt", "hash_name", "type_name"),
    [("223", "sha2-256", "rsa-2048"), ("2", "sha2-512", "rsa-2048"), ("1000", "sha2-256", "rsa-4096")],
)
def test_salt_length_bounds(salt, hash_name, type_name):
    key = make_key(type_name)
    options = SignOptions(hash_algorithm=hash_name, salt_length=salt)
    if salt == "2":  # within bounds: fine
        key.sign(b"x", options)
        return
    with pytest.raises(InvalidRequest, match=f"^requested salt length {salt} is invalid$"):
        key.sign(b"x", options)
    with pytest.raises(InvalidRequest, match=f"^requested salt length {salt} is invalid$"):
        key.verify(b"x", "vault-kms:v1:AAAA", options)
    # The largest allowed: (bits - 1 + 7) // 8 - 2 - hLen.
    largest = (2048 - 1 + 7) // 8 - 2 - 32 if type_name == "rsa-2048" else (4096 - 1 + 7) // 8 - 2 - 32
    signature, _ = key.sign(b"x", SignOptions(hash_algorithm="sha2-256", salt_length=str(largest)))
    pss = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=largest)
    public_key_of(key).verify(payload(signature), b"x", pss, hashes.SHA256())


SALT_LENGTHS = {
    "auto": 0,
    "AUTO": 0,
    "Hash": -1,
    "0": 0,
    "-1": -1,
    "+5": 5,
    "007": 7,
    "32": 32,
    None: 0,
    12: 12,
}


@pytest.mark.parametrize(("value", "expected"), SALT_LENGTHS.items(), ids=[repr(v) for v in SALT_LENGTHS])
def test_parse_salt_length(value, expected):
    assert parse_salt_length(value) == expected


@pytest.mark.parametrize("value", ["", " 1", "1 ", "1.0", "٣", "1_0", "9223372036854775808", "auto!"])
def test_parse_salt_length_refuses(value):
    with pytest.raises(InvalidRequest, match="^salt length neither 'auto', 'hash', nor an int$"):
        parse_salt_length(value)


def test_unknown_rsa_signature_algorithm_is_vaults_plain_error():
    with pytest.raises(RefusedAsServerError, match="^unsupported rsa signature algorithm$"):
        make_key("rsa-2048").sign(b"x", SignOptions(signature_algorithm="pss-mgf1"))


def test_signature_algorithm_is_ignored_by_ecdsa_and_ed25519():
    for type_name in ("ecdsa-p256", "ed25519"):
        key = make_key(type_name)
        signature, _ = key.sign(b"x", SignOptions(signature_algorithm="pkcs1v15", salt_length="hash"))
        assert key.verify(b"x", signature, SignOptions())


# -- ed25519 -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("salt", [None, "auto", "hash", "-1", "0", "1"])
def test_ed25519_pure_signatures(salt):
    # As hvac's integration tests: sha2-256 and pss with any salt are accepted and change nothing.
    key = make_key("ed25519", exportable=True)
    options = SignOptions(hash_algorithm="sha2-256", signature_algorithm="pss", salt_length=salt or "auto")
    signature, _ = key.sign(b"message", options)
    raw = payload(signature)
    assert len(raw) == 64
    public_key_of(key).verify(raw, b"message")
    assert key.verify(b"message", signature, options) is True
    seed_and_public = base64.b64decode(exported(key, "signing-key"))
    assert len(seed_and_public) == 64
    private = ed25519.Ed25519PrivateKey.from_private_bytes(seed_and_public[:32])
    assert private.public_key().public_bytes_raw() == seed_and_public[32:]
    assert private.sign(b"message") == raw  # Ed25519 is deterministic


ED25519_ORDER = 2**252 + 27742317777372353535851937790883648493  # L


def _sodium_and_openssl_agree(key, message: bytes, raw_signature: bytes) -> bool:
    """The key's verify (libsodium for its own key pair) against OpenSSL's, on one signature."""
    signature = "vault-kms:v1:" + base64.b64encode(raw_signature).decode()
    ours = key.verify(message, signature, SignOptions())
    try:
        public_key_of(key).verify(raw_signature, message)
        openssl = True
    except InvalidSignature:
        openssl = False
    assert ours == openssl, (raw_signature.hex(), message)
    return ours


def test_ed25519_verify_answers_as_openssl_on_altered_signatures():
    key = make_key("ed25519", exportable=True)
    for message in (b"", b"message", os.urandom(1000)):
        raw = payload(key.sign(message, SignOptions())[0])
        assert _sodium_and_openssl_agree(key, message, raw) is True
        assert _sodium_and_openssl_agree(key, message + b"!", raw) is False
        for position in range(64):
            for flip in (0x01, 0x80, 0xFF):
                altered = bytearray(raw)
                altered[position] ^= flip
                assert _sodium_and_openssl_agree(key, message, bytes(altered)) is False
        # S + L: the same point equation, a non-canonical scalar, refused by both.
        s_value = int.from_bytes(raw[32:], "little") + ED25519_ORDER
        assert _sodium_and_openssl_agree(key, message, raw[:32] + s_value.to_bytes(32, "little")) is False
        for length in (0, 32, 63, 65, 128):
            assert _sodium_and_openssl_agree(key, message, (raw * 2)[:length]) is False
        assert _sodium_and_openssl_agree(key, message, bytes(64)) is False
        # R the identity and S = k·a: only the private key can make it; libsodium refuses it, OpenSSL and Go
        # take it, and so does the service (found by review).
        assert _sodium_and_openssl_agree(key, message, _identity_r_signature(key, message)) is True


def _identity_r_signature(key, message: bytes) -> bytes:
    seed = base64.b64decode(exported(key, "signing-key"))[:32]
    digest = hashlib.sha512(seed).digest()
    scalar = int.from_bytes(digest[:32], "little")
    scalar &= (1 << 254) - 8
    scalar |= 1 << 254  # RFC 8032's clamping
    public = public_key_of(key).public_bytes_raw()
    identity = (1).to_bytes(32, "little")
    challenge = int.from_bytes(hashlib.sha512(identity + public + message).digest(), "little") % ED25519_ORDER
    return identity + (challenge * scalar % ED25519_ORDER).to_bytes(32, "little")


def test_ed25519_jws_is_urlsafe_base64():
    key = make_key("ed25519")
    for n in range(10):
        signature, _ = key.sign(bytes(range(n * 7)), SignOptions(marshaling="jws"))
        text = signature.split(":")[2]
        assert "=" not in text and "+" not in text and "/" not in text
        assert key.verify(bytes(range(n * 7)), signature, SignOptions(marshaling="jws"))
        with pytest.raises(InvalidRequest, match="^invalid base64 signature value$"):
            key.verify(b"", signature + "=", SignOptions(marshaling="jws"))
        with pytest.raises(InvalidRequest, match="^invalid base64 signature value$"):
            key.verify(b"", signature + "+", SignOptions(marshaling="jws"))


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (SignOptions(prehashed=True), "only Pure Ed25519 signatures supported, prehashed must be false"),
        (SignOptions(hash_algorithm="sha2-512"), "only Pure Ed25519 signatures supported, hash_alogithm should not"),
    ],
    ids=["prehashed", "sha2-512"],
)
def test_ed25519_is_pure_only(options, message):
    key = make_key("ed25519")
    with pytest.raises(InvalidRequest) as excinfo:
        key.sign(b"x", options)
    assert excinfo.value.message.startswith("failed to parse batch item: " + message)
    signature, _ = key.sign(b"x", SignOptions())
    with pytest.raises(InvalidRequest) as excinfo:
        key.verify(b"x", signature, options)
    assert excinfo.value.message.startswith("failed to parse item: failed to parse batch item: " + message)


def test_derived_ed25519():
    key = make_key("ed25519", derived=True, exportable=True)
    signature, version = key.sign(b"message", SignOptions(context=b"device-7"))
    go_private = base64.b64decode(exported(key, "signing-key"))
    derived = ed25519.Ed25519PrivateKey.from_private_bytes(hkdf(go_private, b"device-7", 32))
    derived.public_key().verify(payload(signature), b"message")
    public = key.derived_public_key(b"device-7")
    assert base64.b64decode(public) == derived.public_key().public_bytes_raw()
    assert key.verify(b"message", signature, SignOptions(context=b"device-7")) is True
    assert key.verify(b"message", signature, SignOptions(context=b"device-8")) is False
    assert key.body()["keys"]["1"]["public_key"] == ""
    assert key.body(context=b"device-7")["keys"]["1"]["public_key"] == public
    assert make_key("ed25519").derived_public_key(b"device-7") is None
    with pytest.raises(InvalidRequest, match="^missing 'context' for key derivation"):
        key.derived_public_key(None)


# -- key body ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("type_name", ["ed25519", *ECDSA_TYPES, *RSA_TYPES])
def test_asymmetric_key_entries(type_name):
    entry = make_key(type_name).body()["keys"]["1"]
    assert set(entry) == {"name", "public_key", "certificate_chain", "creation_time"}
    names = {"ed25519": "ed25519", "ecdsa-p256": "P-256", "ecdsa-p384": "P-384", "ecdsa-p521": "P-521"}
    assert entry["name"] == names.get(type_name, type_name)
    assert entry["certificate_chain"] == "" and entry["creation_time"].endswith("Z")
    if type_name == "ed25519":
        assert len(base64.b64decode(entry["public_key"])) == 32
    else:
        assert entry["public_key"].startswith("-----BEGIN PUBLIC KEY-----\n")
        assert entry["public_key"].endswith("-----END PUBLIC KEY-----\n")


@pytest.mark.parametrize("type_name", AEAD_TYPES)
def test_symmetric_key_entries_are_unix_times(type_name):
    assert isinstance(make_key(type_name).body()["keys"]["1"], int)


def test_hmac_key_body():
    key = make_key("hmac", materials={1: KEY_TYPES["hmac"].generate(64)})
    body = key.body()
    assert "keys" not in body and body["key_size"] == 64 and key.key_size == 64
    assert "key_size" not in make_key("aes256-gcm96").body()


# -- hmac ----------------------------------------------------------------------------------------------------

HMAC_HASHES = {name: algorithm for name, algorithm in HASHES.items()}
HASHLIB = {
    "sha1": "sha1",
    "sha2-224": "sha224",
    "sha2-256": "sha256",
    "sha2-384": "sha384",
    "sha2-512": "sha512",
    "sha3-224": "sha3_224",
    "sha3-256": "sha3_256",
    "sha3-384": "sha3_384",
    "sha3-512": "sha3_512",
}


@pytest.mark.parametrize("algorithm", sorted(HASHLIB))
@pytest.mark.parametrize("type_name", ALL_TYPES)
def test_hmac_recomputed_with_the_exported_hmac_key(type_name, algorithm):
    key = make_key(type_name, versions=2, exportable=True)
    value, version = key.hmac(b"input", algorithm)
    assert version == 2 and value.startswith("vault-kms:v2:")
    hmac_key = base64.b64decode(exported(key, "hmac-key", 2))
    expected = material(type_name, 2).key if type_name == "hmac" else material(type_name, 2).hmac_key
    assert hmac_key == expected
    assert payload(value) == hmac.new(hmac_key, b"input", HASHLIB[algorithm]).digest()
    assert key.verify_hmac(b"input", value, algorithm) is True
    assert key.verify_hmac(b"input", value.replace("vault-kms:", "vault:"), algorithm) is True
    assert key.verify_hmac(b"inpuT", value, algorithm) is False
    older, _ = key.hmac(b"input", algorithm, key_version=1)
    assert (
        payload(older)
        == hmac.new(base64.b64decode(exported(key, "hmac-key", 1)), b"input", HASHLIB[algorithm]).digest()
    )


def test_hmac_of_the_hmac_type_uses_the_key_itself():
    big = KEY_TYPES["hmac"].generate(100)
    key = make_key("hmac", materials={1: big}, exportable=True)
    assert base64.b64decode(exported(key, "hmac-key")) == big.key
    assert payload(key.hmac(b"d")[0]) == hmac.new(big.key, b"d", "sha256").digest()


HMAC_VERSION_ERRORS = {
    "below min encryption": (3, 2, 1, "cannot generate HMAC: version is too old (disallowed by policy)"),
    "negative with min encryption": (3, 2, -1, "cannot generate HMAC: version is too old (disallowed by policy)"),
    "negative": (3, 0, -1, "key version does not exist (cannot be negative)"),
    "above latest": (3, 0, 4, "key version does not exist; latest key version is 3"),
}


@pytest.mark.parametrize(
    ("latest", "min_enc", "requested", "message"), HMAC_VERSION_ERRORS.values(), ids=HMAC_VERSION_ERRORS
)
def test_hmac_version_rules(latest, min_enc, requested, message):
    key = make_key("aes256-gcm96", versions=latest, min_encryption_version=min_enc, min_decryption_version=1)
    with pytest.raises(InvalidRequest) as excinfo:
        key.hmac(b"x", key_version=requested)
    assert excinfo.value.message == message


def test_hmac_versions_below_min_decryption_are_gone():
    key = make_key("aes256-gcm96", versions=3, min_decryption_version=2)
    with pytest.raises(InvalidRequest, match="^no such key version$"):
        key.hmac(b"x", key_version=1)
    assert key.hmac(b"x", key_version=2)[1] == 2 and key.hmac(b"x", key_version=3)[1] == 3


@pytest.mark.parametrize("algorithm", ["md5", "none", "SHA2-256", ""])
def test_hmac_unknown_algorithm(algorithm):
    key = make_key("aes256-gcm96")
    for call in (lambda: key.hmac(b"x", algorithm), lambda: key.verify_hmac(b"x", "vault:v1:AAAA", algorithm)):
        with pytest.raises(InvalidRequest) as excinfo:
            call()
        assert excinfo.value.message == "unsupported algorithm '\\x00'"


VERIFY_HMAC_ERRORS = {
    "no prefix": ("abc", "invalid HMAC to verify: no prefix"),
    "kms without v": ("vault-kms:1:abc", "invalid HMAC to verify: no prefix"),
    "no fields": ("vault:v1", "invalid HMAC: wrong number of fields"),
    "bad version": ("vault:vx:AAAA", "invalid HMAC: version number could not be decoded"),
    "empty version": ("vault:v:AAAA", "invalid HMAC: version number could not be decoded"),
    "bad base64": (
        "vault:v1:AA!A",
        "unable to decode verification HMAC as base64: illegal base64 data at input byte 2",
    ),
    "too new": ("vault:v4:AAAA", "invalid HMAC: version is too new"),
    "too old": ("vault:v1:AAAA", "cannot verify HMAC: version is too old (disallowed by policy)"),
    "zero": ("vault:v0:AAAA", "cannot verify HMAC: version is too old (disallowed by policy)"),
    "negative": ("vault:v-1:AAAA", "cannot verify HMAC: version is too old (disallowed by policy)"),
}


@pytest.mark.parametrize(("value", "message"), VERIFY_HMAC_ERRORS.values(), ids=VERIFY_HMAC_ERRORS)
def test_verify_hmac_errors(value, message):
    key = make_key("aes256-gcm96", versions=3, min_decryption_version=2)
    with pytest.raises(InvalidRequest) as excinfo:
        key.verify_hmac(b"x", value)
    assert excinfo.value.message == message


def test_verify_hmac_takes_signed_versions_and_any_length():
    key = make_key("aes256-gcm96", versions=2)
    value, _ = key.hmac(b"x", key_version=1)
    assert key.verify_hmac(b"x", value.replace(":v1:", ":v+1:")) is True
    assert key.verify_hmac(b"x", value.replace(":v1:", ":v01:")) is True
    assert key.verify_hmac(b"x", "vault:v1:" + base64.b64encode(payload(value)[:16]).decode()) is False


# -- export --------------------------------------------------------------------------------------------------


EXPORTS = {
    # type: export types that work
    "aes128-gcm96": {"encryption-key", "hmac-key"},
    "aes256-gcm96": {"encryption-key", "hmac-key"},
    "aes256-gcm-siv": {"encryption-key", "hmac-key"},
    "ml-dsa-44": {"signing-key", "hmac-key", "public-key"},
    "ml-dsa-65": {"signing-key", "hmac-key", "public-key"},
    "ml-dsa-87": {"signing-key", "hmac-key", "public-key"},
    "hpke-x25519": {"encryption-key", "hmac-key", "public-key"},
    "hpke-mlkem768-x25519": {"encryption-key", "hmac-key", "public-key"},
    "aes128-cmac": {"hmac-key"},
    "aes256-cmac": {"hmac-key"},
    "hybrid-ml-dsa-65-ecdsa-p256": {"signing-key", "hmac-key", "public-key"},
    "hybrid-ml-dsa-65-ed25519": {"signing-key", "hmac-key", "public-key"},
    "chacha20-poly1305": {"encryption-key", "hmac-key"},
    "xchacha20-poly1305": {"encryption-key", "hmac-key"},
    "ed25519": {"signing-key", "hmac-key", "public-key"},
    "ecdsa-p256": {"signing-key", "hmac-key", "public-key"},
    "ecdsa-p384": {"signing-key", "hmac-key", "public-key"},
    "ecdsa-p521": {"signing-key", "hmac-key", "public-key"},
    "rsa-2048": {"encryption-key", "signing-key", "hmac-key", "public-key"},
    "rsa-3072": {"encryption-key", "signing-key", "hmac-key", "public-key"},
    "rsa-4096": {"encryption-key", "signing-key", "hmac-key", "public-key"},
    "hmac": {"hmac-key"},
}
REFUSALS = {
    "encryption-key": (InvalidRequest, "encryption not supported for the key"),
    "signing-key": (InvalidRequest, "signing not supported for the key"),
    "public-key": (RefusedAsServerError, "unknown key type {type} for export type public-key"),
}


@pytest.mark.parametrize("export_type", ["encryption-key", "signing-key", "hmac-key", "public-key"])
@pytest.mark.parametrize("type_name", ALL_TYPES)
def test_export_matrix(type_name, export_type):
    key = make_key(type_name, versions=2, exportable=True)
    if export_type in EXPORTS[type_name]:
        keys = key.export(export_type)
        assert set(keys) == {"1", "2"} and all(keys.values())
        return
    cls, message = REFUSALS[export_type]
    with pytest.raises(cls) as excinfo:
        key.export(export_type)
    assert excinfo.value.message == message.format(type=type_name)


def test_export_formats():
    rsa_key = make_key("rsa-2048", exportable=True)
    assert exported(rsa_key, "encryption-key") == exported(rsa_key, "signing-key")
    assert exported(rsa_key, "public-key").startswith("-----BEGIN PUBLIC KEY-----\n")
    assert exported(rsa_key, "public-key").endswith("\n")  # RSA: with the trailing newline
    ec_key = make_key("ecdsa-p521", exportable=True)
    assert exported(ec_key, "public-key").endswith("-----END PUBLIC KEY-----")  # EC: trimmed
    assert exported(ec_key, "signing-key").endswith("-----END EC PRIVATE KEY-----")
    private = serialization.load_pem_private_key(exported(ec_key, "signing-key").encode(), None)
    assert (
        private.private_numbers()
        == serialization.load_der_private_key(material("ecdsa-p521", 1).key, None).private_numbers()
    )
    ed_key = make_key("ed25519", exportable=True)
    public = base64.b64decode(exported(ed_key, "public-key"))
    assert public == serialization.load_der_public_key(material("ed25519", 1).public_key).public_bytes_raw()
    assert base64.b64decode(exported(ed_key, "signing-key"))[32:] == public


def test_public_keys_export_without_exportable():
    for type_name in ("ed25519", "ecdsa-p256", "rsa-2048"):
        assert make_key(type_name).export("public-key")["1"]
    for export_type in ("encryption-key", "signing-key", "hmac-key"):
        with pytest.raises(InvalidRequest, match="^private key material is not exportable$"):
            make_key("rsa-2048").export(export_type)


EXPORT_VERSIONS = {
    "all live": (None, ["2", "3"]),
    "empty": ("", ["2", "3"]),
    "latest": ("latest", ["3"]),
    "int": (2, ["2"]),
    "text": ("3", ["3"]),
    "v-text": ("v2", ["2"]),
    "plus": ("+3", ["3"]),
}


@pytest.mark.parametrize(("version", "expected"), EXPORT_VERSIONS.values(), ids=EXPORT_VERSIONS)
def test_export_versions(version, expected):
    key = make_key("aes256-gcm96", versions=3, exportable=True, min_decryption_version=2)
    assert sorted(key.export("encryption-key", version)) == expected


EXPORT_VERSION_ERRORS = {
    "word": ("first", "invalid key version"),
    "vv": ("vv2", "invalid key version"),
    "below min decryption": (1, "version for export is below minimum decryption version"),
    "negative": ("-1", "version for export is below minimum decryption version"),
    "above latest": ("v4", "version does not exist or cannot be found"),
}


@pytest.mark.parametrize(("version", "message"), EXPORT_VERSION_ERRORS.values(), ids=EXPORT_VERSION_ERRORS)
def test_export_version_errors(version, message):
    key = make_key("aes256-gcm96", versions=3, exportable=True, min_decryption_version=2)
    with pytest.raises(InvalidRequest) as excinfo:
        key.export("encryption-key", version)
    assert excinfo.value.message == message


def test_export_type_and_certificate_chain_errors():
    key = make_key("ecdsa-p256", exportable=True)
    with pytest.raises(InvalidRequest, match="^invalid export type$"):
        key.export("private-key")
    with pytest.raises(RefusedAsServerError, match="^selected key version does not have a certificate chain imported$"):
        key.export("certificate-chain")
    with pytest.raises(InvalidRequest, match="^certificate chain not supported for keys that do not support signing$"):
        make_key("aes256-gcm96").export("certificate-chain")


# -- datakey -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("bits", [128, 256, 512])
def test_datakey(bits):
    assert len(new_datakey(bits)) == bits // 8 and new_datakey(bits) != new_datakey(bits)


@pytest.mark.parametrize("bits", [0, 64, 192, 1024, -256, True])
def test_datakey_bits(bits):
    with pytest.raises(InvalidRequest, match="^invalid bit length$"):
        new_datakey(bits)


# -- Go's base64 errors --------------------------------------------------------------------------------------

GO_BASE64 = {
    "valid": ("YWJj", None),
    "empty": ("", None),
    "padded": ("YQ==", None),
    "newlines": ("YW\r\nJj\nZA==\n", None),
    "bad character": ("YWJj!", 4),
    "space": ("YW J", 2),
    "missing padding": ("YWJjZA", 4),
    "one character": ("Y", 0),
    "padding too early": ("Y===", 1),
    "half padding": ("YQ=", 3),
    "padding then letter": ("YQ=a", 2),
    "data after padding": ("YQ==YQ==", 4),
    "url alphabet": ("a-_b", 1),
    "non-ascii": ("YWJjé", 4),
}


@pytest.mark.parametrize(("text", "offset"), GO_BASE64.values(), ids=GO_BASE64)
def test_go_base64(text, offset):
    if offset is None:
        assert b64decode_strict(text) == base64.b64decode(text.replace("\r", "").replace("\n", ""))
        return
    with pytest.raises(ValueError) as excinfo:
        b64decode_strict(text)
    assert str(excinfo.value) == f"illegal base64 data at input byte {offset}"


# -- BYOK and import -----------------------------------------------------------------------------------------


@functools.cache
def wrapping_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(65537, 4096)


def _cmac(key: bytes, data: bytes) -> bytes:
    from cryptography.hazmat.primitives import cmac
    from cryptography.hazmat.primitives.ciphers import algorithms

    mac = cmac.CMAC(algorithms.AES(key))
    mac.update(data)
    return mac.finalize()


def byok_source(type_name: str) -> bytes:
    """What a BYOK blob carries for a type: raw bytes, or PKCS#8 DER made here (not by the service)."""
    if type_name in KEY_SIZES:
        return os.urandom(KEY_SIZES[type_name])
    if type_name in HPKE_KEY_SIZES:
        return os.urandom(HPKE_KEY_SIZES[type_name])
    if type_name in CMAC_KEY_SIZES:
        return os.urandom(CMAC_KEY_SIZES[type_name])
    if type_name in HYBRID_TYPES:
        return KEY_TYPES[type_name].generate().key
    if type_name == "hmac":
        return os.urandom(48)
    if type_name == "ed25519":
        private = ed25519.Ed25519PrivateKey.generate()
    elif type_name in CURVES:
        private = ec.generate_private_key(CURVES[type_name]())
    else:
        private = serialization.load_der_private_key(material(type_name, 9).key, None)
    return private.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


@pytest.mark.parametrize("hash_function", ["SHA1", "SHA224", "SHA256", "sha384", "Sha512"])
def test_byok_round_trip(hash_function):
    target = os.urandom(32)
    blob = wrap_byok(wrapping_key().public_key(), target, hash_function)
    raw = base64.b64decode(blob)
    assert len(raw) == 512 + 40  # RSA-4096 ‖ KWP(32 bytes) = 32 + 8
    assert unwrap_byok(wrapping_key(), raw, hash_function) == target


@pytest.mark.parametrize("type_name", ALL_TYPES)
def test_unwrap_a_blob_made_with_cryptography_and_import_it(type_name):
    target = byok_source(type_name)
    ephemeral = os.urandom(32)
    oaep = padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None)
    blob = wrapping_key().public_key().encrypt(ephemeral, oaep) + aes_key_wrap_with_padding(ephemeral, target)
    unwrapped = unwrap_byok(wrapping_key(), blob)
    assert unwrapped == target
    imported = KEY_TYPES[type_name].import_key(unwrapped)
    assert imported.origin == Origin.IMPORTED and len(imported.hmac_key) == 32
    key = make_key(type_name, materials={1: imported}, exportable=True)
    assert key.imported and key.body()["imported_key"] is True
    if type_name in HYBRID_TYPES:
        assert imported.key == target and imported.public_key is None
    elif type_name in KEY_SIZES or type_name in HPKE_KEY_SIZES or type_name in CMAC_KEY_SIZES or type_name == "hmac":
        assert imported.key == target
        if type_name in CMAC_KEY_SIZES:  # CMAC keys are not exported (only their HMAC key is)
            assert key.cmac(b"m")[0].split(":")[2] == base64.b64encode(_cmac(target, b"m")).decode()
        else:
            exported_type = "hmac-key" if type_name == "hmac" else "encryption-key"
            assert base64.b64decode(exported(key, exported_type)) == target
    else:
        source = serialization.load_der_private_key(target, None)
        assert (
            serialization.load_der_public_key(imported.public_key).public_numbers()
            == (source.public_key().public_numbers())
            if type_name != "ed25519" and type_name not in ML_DSA_TYPES
            else imported.public_key
            == source.public_key().public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )
    if type_name in SIGNING_TYPES:
        signature, _ = key.sign(b"after import", SignOptions())
        assert key.verify(b"after import", signature, SignOptions())


@pytest.mark.parametrize("type_name", ALL_TYPES)
def test_byok_export_to_another_cluster(type_name):
    source = make_key(type_name, versions=2, exportable=True)
    destination = make_key("rsa-4096")
    blobs = source.byok_export(destination, hash_function="SHA512")
    assert set(blobs) == {"1", "2"}
    destination_private = serialization.load_der_private_key(material("rsa-4096", 1).key, None)
    unwrapped = unwrap_byok(destination_private, base64.b64decode(blobs["2"]), "SHA512")
    copy = make_key(type_name, materials={1: KEY_TYPES[type_name].import_key(unwrapped)})
    if type_name in ENCRYPTION_TYPES:
        ciphertext, _ = source.encrypt(b"moved", EncryptOptions(), key_version=2)
        assert copy.decrypt(ciphertext.replace(":v2:", ":v1:"), EncryptOptions()) == b"moved"
    elif type_name in SIGNING_TYPES:
        signature, _ = copy.sign(b"moved", SignOptions())
        assert source.verify(b"moved", signature.replace(":v1:", ":v2:"), SignOptions())
    elif type_name in CMAC_KEY_SIZES:
        assert copy.cmac(b"moved")[0].split(":")[2] == source.cmac(b"moved")[0].split(":")[2]
    else:
        assert copy.hmac(b"moved")[0].split(":")[2] == source.hmac(b"moved")[0].split(":")[2]
    assert source.byok_export(destination, "v1").keys() == {"1"}


def test_byok_errors():
    key = make_key("aes256-gcm96", exportable=True)
    with pytest.raises(InvalidRequest, match="^key is not exportable$"):
        make_key("aes256-gcm96").byok_export(make_key("rsa-2048"))
    with pytest.raises(RefusedAsServerError, match="^unsupported key type in use; must be a rsa key$"):
        key.byok_export(make_key("ecdsa-p256"))
    with pytest.raises(RefusedAsServerError, match="^message signing not supported for key type aes256-gcm96$"):
        key.byok_export(make_key("aes256-gcm96"))
    with pytest.raises(RefusedAsServerError, match="^unknown hash function$"):
        key.byok_export(make_key("rsa-2048"), hash_function="MD5")
    with pytest.raises(InvalidRequest, match="^unknown hash function$"):
        unwrap_byok(wrapping_key(), b"\0" * 600, "SHA3")
    with pytest.raises(RefusedAsServerError, match="^provided ciphertext is too short$"):
        unwrap_byok(wrapping_key(), b"\0" * 512)
    with pytest.raises(RefusedAsServerError, match="^crypto/rsa: decryption error$"):
        unwrap_byok(wrapping_key(), b"\1" * 600)
    blob = base64.b64decode(wrap_byok(wrapping_key().public_key(), os.urandom(32), "SHA256"))
    with pytest.raises(RefusedAsServerError, match="^crypto/rsa: decryption error$"):
        unwrap_byok(wrapping_key(), blob, "SHA1")  # the wrong OAEP hash
    with pytest.raises(RefusedAsServerError, match="^failed to unwrap the target key: integrity check failed$"):
        unwrap_byok(wrapping_key(), blob[:-1] + bytes([blob[-1] ^ 1]))
    short_ephemeral = (
        wrapping_key()
        .public_key()
        .encrypt(b"\0" * 16, padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None))
    )
    with pytest.raises(RefusedAsServerError, match="^expected ephemeral AES key to be 256-bit$"):
        unwrap_byok(wrapping_key(), short_ephemeral + b"\0" * 24)


IMPORT_ERRORS = {
    "aes128 size": ("aes128-gcm96", b"\0" * 32, "invalid key size 32 bytes for key type aes128-gcm96"),
    "aes256 size": ("aes256-gcm96", b"\0" * 16, "invalid key size 16 bytes for key type aes256-gcm96"),
    "xchacha size": ("xchacha20-poly1305", b"\0" * 24, "invalid key size 24 bytes for key type xchacha20-poly1305"),
    "hmac small": ("hmac", b"\0" * 31, "invalid key size 31 bytes for key type hmac"),
    "hmac big": ("hmac", b"\0" * 513, "invalid key size 513 bytes for key type hmac"),
    "not pkcs8": ("ed25519", b"\0" * 32, "error parsing asymmetric key: not a PKCS#8 private key"),
    "wrong curve": ("ecdsa-p256", "ecdsa-p384", "invalid curve: expected P-256, got P-384"),
    "wrong size": ("rsa-4096", "rsa-2048", "invalid key size: expected 512 bytes, got 256 bytes"),
    "rsa for ec": ("ecdsa-p521", "rsa-2048", "invalid key type: expected ecdsa-p521, got *rsa.PrivateKey"),
    "ec for ed25519": ("ed25519", "ecdsa-p256", "invalid key type: expected ed25519, got *ecdsa.PrivateKey"),
    "ed25519 for rsa": ("rsa-2048", "ed25519", "invalid key type: expected rsa-2048, got ed25519.PrivateKey"),
}


@pytest.mark.parametrize(("type_name", "raw", "message"), IMPORT_ERRORS.values(), ids=IMPORT_ERRORS)
def test_import_errors(type_name, raw, message):
    data = raw if isinstance(raw, bytes) else material(raw).key
    with pytest.raises(RefusedAsServerError) as excinfo:
        KEY_TYPES[type_name].import_key(data)
    assert excinfo.value.message == message


# A hybrid key has two public keys and no single PKIX one to import.
@pytest.mark.parametrize("type_name", [t for t in SIGNING_TYPES if t not in HYBRID_TYPES])
def test_public_key_only_versions(type_name):
    full = make_key(type_name, exportable=True)
    pem = public_key_pem(material(type_name, 1).public_key)
    imported = KEY_TYPES[type_name].import_public_key(pem)
    assert not imported.has_private_key and imported.origin == Origin.IMPORTED
    public_only = make_key(type_name, materials={1: imported}, exportable=True)
    signature, _ = full.sign(b"m", SignOptions())
    assert public_only.verify(b"m", signature, SignOptions()) is True
    with pytest.raises(InvalidRequest, match="^requested version for signing does not contain a private part$"):
        public_only.sign(b"m", SignOptions())
    assert public_only.export("signing-key")["1"] == ""
    assert public_only.export("public-key") == full.export("public-key")
    assert public_only.body()["keys"]["1"]["public_key"] == full.body()["keys"]["1"]["public_key"]
    if type_name in RSA_TYPES:
        ciphertext, _ = public_only.encrypt(b"to the owner", EncryptOptions())
        assert full.decrypt(ciphertext, EncryptOptions()) == b"to the owner"
        with pytest.raises(RefusedAsServerError, match="^failed to RSA decrypt the ciphertext"):
            public_only.decrypt(ciphertext, EncryptOptions())


def test_public_key_import_errors():
    with pytest.raises(RefusedAsServerError, match="^provided type does not support public_key import$"):
        KEY_TYPES["aes256-gcm96"].import_public_key("-----BEGIN PUBLIC KEY-----")
    with pytest.raises(RefusedAsServerError, match="^error parsing public key: not in PEM format$"):
        KEY_TYPES["ecdsa-p256"].import_public_key("MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE")
    with pytest.raises(RefusedAsServerError, match="^invalid curve: expected P-256, got P-521$"):
        KEY_TYPES["ecdsa-p256"].import_public_key(public_key_pem(material("ecdsa-p521").public_key))
    with pytest.raises(RefusedAsServerError, match="^unable to import only public key for derived Ed25519 key"):
        KEY_TYPES["ed25519"].import_public_key(public_key_pem(material("ed25519").public_key), derived=True)


@pytest.mark.parametrize("type_name", sorted(CMAC_KEY_SIZES))
def test_cmac_matches_cryptography_truncates_and_verifies(type_name):
    key = make_key(type_name, versions=2)
    raw = {v: material(type_name, v).key for v in (1, 2)}
    value, version = key.cmac(b"message")
    assert version == 2 and base64.b64decode(value.split(":")[2]) == _cmac(raw[2], b"message")
    short, _ = key.cmac(b"message", key_version=1, mac_length=8)
    assert base64.b64decode(short.split(":")[2]) == _cmac(raw[1], b"message")[:8]
    assert key.verify_cmac(b"message", value) and key.verify_cmac(b"message", short, mac_length=8)
    assert not key.verify_cmac(b"other", value)
    assert not key.verify_cmac(b"message", short)  # a short tag counts only when mac_length asks for it
    with pytest.raises(InvalidRequest, match="mac_length must be 8 to 16 bytes"):
        key.cmac(b"message", mac_length=4)
    with pytest.raises(InvalidRequest, match="CMAC is not supported for key type aes256-gcm96"):
        make_key("aes256-gcm96").cmac(b"message")
