"""The key-type registry: one class per Vault key type, one place for generate/load/encrypt/sign.

Adding a key type (aes256-gcm96, ed25519, rsa-*, ...) means adding one class here and registering it;
the keyring, storage and HTTP layers only talk to the ``KeyType`` interface. Per-request choices reach a
type as one options object (``EncryptOptions``, ``SignOptions``), so a new option (a nonce source, an RSA
padding) is a field there, not a new parameter on every type. No I/O happens here.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, ClassVar

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import (
    Prehashed,
    decode_dss_signature,
    encode_dss_signature,
)
from nacl import bindings as sodium
from nacl.exceptions import CryptoError

from kms_service.errors import InvalidRequest
from kms_service.material import KeyMaterial

# Vault's hash_algorithm names → cryptography hash classes.
HASH_ALGORITHMS: dict[str, type[hashes.HashAlgorithm]] = {
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

MARSHALING_ALGORITHMS = ("asn1", "jws")


class DecryptionFailed(InvalidRequest):
    """Every AEAD open failure collapses to this one message: it tells nothing about why."""

    def __init__(self) -> None:
        super().__init__("cipher: message authentication failed")


def hash_algorithm(name: str) -> hashes.HashAlgorithm:
    try:
        return HASH_ALGORITHMS[name]()
    except KeyError:
        raise InvalidRequest(f"unsupported hash algorithm; use one of {', '.join(HASH_ALGORITHMS)}") from None


class NonceSource:
    """How an AEAD type gets its nonce. Never from the caller (CVE-2023-4680)."""

    RANDOM = "random"
    # Convergent encryption (derived keys): the nonce is an HMAC of the plaintext, so equal inputs
    # give equal ciphertexts. Only the domain sets this, from the key's settings.
    CONVERGENT = "convergent"


@dataclass(frozen=True)
class EncryptOptions:
    """Per-request encryption choices (encrypt, decrypt, rewrap)."""

    associated_data: bytes = b""
    # Derived keys (Vault's ``context``): the per-context key is derived from the version's key.
    context: bytes | None = None
    nonce_source: str = NonceSource.RANDOM


@dataclass(frozen=True)
class SignOptions:
    """Per-request signing choices (sign, verify)."""

    hash_algorithm: str = "sha2-256"
    prehashed: bool = False
    marshaling: str = "asn1"
    # RSA only: "pss" or "pkcs1v15"; salt length "auto", "hash" or a byte count, as Vault takes them.
    signature_algorithm: str = "pss"
    salt_length: str = "auto"
    context: bytes | None = None


class KeyType:
    """Interface every key type implements. ``handle`` is the ready-built crypto object of one version."""

    name: ClassVar[str]
    supports_encryption: ClassVar[bool] = False
    supports_signing: ClassVar[bool] = False
    supports_derivation: ClassVar[bool] = False
    supports_associated_data: ClassVar[bool] = False

    def generate(self) -> KeyMaterial:
        """A fresh version's material (primary key, HMAC key, public key), as it is sealed and stored.
        May be slow (RSA): callers run it off the event loop, before taking any lock."""
        raise NotImplementedError

    def public_key(self, key: bytes) -> bytes | None:
        """DER SubjectPublicKeyInfo for a stored primary key (asymmetric types), else None."""
        return None

    def load(self, material: KeyMaterial) -> Any:
        """Build the crypto object for a version (once per version, lazily, off the event loop)."""
        raise NotImplementedError

    def encrypt(self, handle: Any, plaintext: bytes, options: EncryptOptions) -> bytes:
        raise InvalidRequest(f"message encryption not supported for key type {self.name}")

    def decrypt(self, handle: Any, body: bytes, options: EncryptOptions) -> bytes:
        raise InvalidRequest(f"message decryption not supported for key type {self.name}")

    def sign(self, handle: Any, data: bytes, options: SignOptions) -> bytes:
        raise InvalidRequest(f"key type {self.name} does not support signing")

    def verify(self, handle: Any, data: bytes, signature: bytes, options: SignOptions) -> bool:
        raise InvalidRequest(f"key type {self.name} does not support verification")

    def key_entry(self, material: KeyMaterial, created_at_unix: int, created_at_rfc3339: str) -> Any:
        """The value under ``keys.<version>`` in the key body (Vault's formatKeyPolicy). Reads only the
        stored material, so showing a key never builds its crypto objects."""
        return created_at_unix


class ChaCha20Poly1305(KeyType):
    """IETF ChaCha20-Poly1305 through libsodium; body = nonce(12) ‖ ciphertext ‖ tag(16), as Vault."""

    name = "chacha20-poly1305"
    supports_encryption = True
    supports_associated_data = True
    KEY_SIZE = 32
    NONCE_SIZE = 12
    TAG_SIZE = 16

    def generate(self) -> KeyMaterial:
        return KeyMaterial.new(os.urandom(self.KEY_SIZE))

    def load(self, material: KeyMaterial) -> bytes:
        if len(material.key) != self.KEY_SIZE:
            raise ValueError("chacha20-poly1305 key material must be 32 bytes")
        return material.key

    def encrypt(self, handle: bytes, plaintext: bytes, options: EncryptOptions) -> bytes:
        if options.nonce_source != NonceSource.RANDOM:
            raise InvalidRequest(f"convergent encryption not supported for key type {self.name}")
        # Random 96-bit nonces: safe up to ~2^32 encryptions per key version (rotate before that).
        nonce = os.urandom(self.NONCE_SIZE)
        associated_data = options.associated_data or None
        sealed = sodium.crypto_aead_chacha20poly1305_ietf_encrypt(plaintext, associated_data, nonce, handle)
        return nonce + sealed

    def decrypt(self, handle: bytes, body: bytes, options: EncryptOptions) -> bytes:
        if len(body) < self.NONCE_SIZE + self.TAG_SIZE:
            raise InvalidRequest("invalid ciphertext length")
        nonce, sealed = body[: self.NONCE_SIZE], body[self.NONCE_SIZE :]
        associated_data = options.associated_data or None
        try:
            return sodium.crypto_aead_chacha20poly1305_ietf_decrypt(sealed, associated_data, nonce, handle)
        except CryptoError:
            raise DecryptionFailed() from None


class EcdsaP256(KeyType):
    """ECDSA on NIST P-256; material is PKCS#8 DER, signatures ASN.1 DER (or JWS r‖s)."""

    name = "ecdsa-p256"
    curve_name = "P-256"
    supports_signing = True
    COORDINATE_SIZE = 32

    def _curve(self) -> ec.EllipticCurve:
        return ec.SECP256R1()

    def generate(self) -> KeyMaterial:
        key = ec.generate_private_key(self._curve())
        private = key.private_bytes(
            serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        return KeyMaterial.new(private, _spki_der(key.public_key()))

    def public_key(self, key: bytes) -> bytes:
        return _spki_der(self._private_key(key).public_key())

    def _private_key(self, key: bytes) -> ec.EllipticCurvePrivateKey:
        private = serialization.load_der_private_key(key, password=None)
        if not isinstance(private, ec.EllipticCurvePrivateKey) or private.curve.name != self._curve().name:
            raise ValueError(f"stored material is not an {self.name} private key")
        return private

    def load(self, material: KeyMaterial) -> ec.EllipticCurvePrivateKey:
        return self._private_key(material.key)

    @staticmethod
    def _algorithm(options: SignOptions, data: bytes) -> ec.ECDSA:
        algorithm = hash_algorithm(options.hash_algorithm)
        if options.prehashed:
            if len(data) != algorithm.digest_size:
                raise InvalidRequest(
                    f"prehashed input must be a {algorithm.digest_size}-byte {options.hash_algorithm} digest"
                )
            return ec.ECDSA(Prehashed(algorithm))
        return ec.ECDSA(algorithm)

    def sign(self, handle: ec.EllipticCurvePrivateKey, data: bytes, options: SignOptions) -> bytes:
        der = handle.sign(data, self._algorithm(options, data))
        if options.marshaling == "jws":
            r, s = decode_dss_signature(der)
            size = self.COORDINATE_SIZE
            return r.to_bytes(size, "big") + s.to_bytes(size, "big")
        return der

    def verify(self, handle: ec.EllipticCurvePrivateKey, data: bytes, signature: bytes, options: SignOptions) -> bool:
        algorithm = self._algorithm(options, data)
        if options.marshaling == "jws":
            if len(signature) != 2 * self.COORDINATE_SIZE:
                return False
            half = self.COORDINATE_SIZE
            der = encode_dss_signature(int.from_bytes(signature[:half], "big"), int.from_bytes(signature[half:], "big"))
        else:
            try:
                r, s = decode_dss_signature(signature)
            except ValueError:
                raise InvalidRequest("supplied signature is invalid") from None
            der = encode_dss_signature(r, s)
            if der != signature:
                # Only the canonical DER encoding is accepted (no trailing data, no long forms).
                raise InvalidRequest("supplied signature is invalid")
        try:
            handle.public_key().verify(der, data, algorithm)
        except InvalidSignature:
            return False
        return True

    def key_entry(self, material: KeyMaterial, created_at_unix: int, created_at_rfc3339: str):
        return {
            "name": self.curve_name,
            "public_key": public_key_pem(material.public_key),
            "certificate_chain": material.extra.get("certificate_chain", ""),
            "creation_time": created_at_rfc3339,
        }


def _spki_der(public_key: Any) -> bytes:
    return public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def public_key_pem(spki_der: bytes | None) -> str:
    """PEM of a stored DER public key, as Vault shows it (with the trailing newline)."""
    if spki_der is None:
        return ""
    key = serialization.load_der_public_key(spki_der)
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode("ascii")


KEY_TYPES: dict[str, KeyType] = {kt.name: kt for kt in (ChaCha20Poly1305(), EcdsaP256())}


def key_type(name: str) -> KeyType:
    try:
        return KEY_TYPES[name]
    except KeyError:
        raise InvalidRequest(f"unknown key type; supported: {', '.join(sorted(KEY_TYPES))}") from None
