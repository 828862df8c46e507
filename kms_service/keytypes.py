"""The key-type registry: one class per Vault key type, one place for generate/load/encrypt/sign.

Adding a key type (aes256-gcm96, ed25519, rsa-*, ...) means adding one class here and registering it;
the keyring, storage and HTTP layers only talk to the ``KeyType`` interface. No I/O happens here.
"""

from __future__ import annotations

import os
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


class KeyType:
    """Interface every key type implements. ``handle`` is the ready-built crypto object of one version."""

    name: ClassVar[str]
    supports_encryption: ClassVar[bool] = False
    supports_signing: ClassVar[bool] = False
    supports_derivation: ClassVar[bool] = False
    supports_associated_data: ClassVar[bool] = False

    def generate(self) -> bytes:
        """Fresh key material, as it is sealed and stored."""
        raise NotImplementedError

    def load(self, material: bytes) -> Any:
        """Build the crypto object for stored material (done once per version, then cached)."""
        raise NotImplementedError

    def public_key_pem(self, handle: Any) -> str | None:
        return None

    def encrypt(self, handle: Any, plaintext: bytes, associated_data: bytes) -> bytes:
        raise InvalidRequest(f"message encryption not supported for key type {self.name}")

    def decrypt(self, handle: Any, body: bytes, associated_data: bytes) -> bytes:
        raise InvalidRequest(f"message decryption not supported for key type {self.name}")

    def sign(self, handle: Any, data: bytes, hash_name: str, prehashed: bool, marshaling: str) -> bytes:
        raise InvalidRequest(f"key type {self.name} does not support signing")

    def verify(
        self, handle: Any, data: bytes, signature: bytes, hash_name: str, prehashed: bool, marshaling: str
    ) -> bool:
        raise InvalidRequest(f"key type {self.name} does not support verification")

    def key_entry(self, handle: Any, created_at_unix: int, created_at_rfc3339: str) -> Any:
        """The value under ``keys.<version>`` in the key body (Vault's formatKeyPolicy)."""
        return created_at_unix


class ChaCha20Poly1305(KeyType):
    """IETF ChaCha20-Poly1305 through libsodium; body = nonce(12) ‖ ciphertext ‖ tag(16), as Vault."""

    name = "chacha20-poly1305"
    supports_encryption = True
    supports_associated_data = True
    KEY_SIZE = 32
    NONCE_SIZE = 12
    TAG_SIZE = 16

    def generate(self) -> bytes:
        return os.urandom(self.KEY_SIZE)

    def load(self, material: bytes) -> bytes:
        if len(material) != self.KEY_SIZE:
            raise ValueError("chacha20-poly1305 key material must be 32 bytes")
        return material

    def encrypt(self, handle: bytes, plaintext: bytes, associated_data: bytes) -> bytes:
        # Random 96-bit nonces: safe up to ~2^32 encryptions per key version (rotate before that).
        nonce = os.urandom(self.NONCE_SIZE)
        sealed = sodium.crypto_aead_chacha20poly1305_ietf_encrypt(plaintext, associated_data or None, nonce, handle)
        return nonce + sealed

    def decrypt(self, handle: bytes, body: bytes, associated_data: bytes) -> bytes:
        if len(body) < self.NONCE_SIZE + self.TAG_SIZE:
            raise InvalidRequest("invalid ciphertext length")
        nonce, sealed = body[: self.NONCE_SIZE], body[self.NONCE_SIZE :]
        try:
            return sodium.crypto_aead_chacha20poly1305_ietf_decrypt(sealed, associated_data or None, nonce, handle)
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

    def generate(self) -> bytes:
        key = ec.generate_private_key(self._curve())
        return key.private_bytes(
            serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )

    def load(self, material: bytes) -> ec.EllipticCurvePrivateKey:
        key = serialization.load_der_private_key(material, password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != self._curve().name:
            raise ValueError(f"stored material is not an {self.name} private key")
        return key

    def public_key_pem(self, handle: ec.EllipticCurvePrivateKey) -> str:
        pem = handle.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return pem.decode("ascii")

    @staticmethod
    def _algorithm(hash_name: str, prehashed: bool, data: bytes) -> ec.ECDSA:
        algorithm = hash_algorithm(hash_name)
        if prehashed:
            if len(data) != algorithm.digest_size:
                raise InvalidRequest(f"prehashed input must be a {algorithm.digest_size}-byte {hash_name} digest")
            return ec.ECDSA(Prehashed(algorithm))
        return ec.ECDSA(algorithm)

    def sign(
        self,
        handle: ec.EllipticCurvePrivateKey,
        data: bytes,
        hash_name: str,
        prehashed: bool,
        marshaling: str,
    ) -> bytes:
        der = handle.sign(data, self._algorithm(hash_name, prehashed, data))
        if marshaling == "jws":
            r, s = decode_dss_signature(der)
            size = self.COORDINATE_SIZE
            return r.to_bytes(size, "big") + s.to_bytes(size, "big")
        return der

    def verify(
        self,
        handle: ec.EllipticCurvePrivateKey,
        data: bytes,
        signature: bytes,
        hash_name: str,
        prehashed: bool,
        marshaling: str,
    ) -> bool:
        algorithm = self._algorithm(hash_name, prehashed, data)
        if marshaling == "jws":
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

    def key_entry(self, handle: ec.EllipticCurvePrivateKey, created_at_unix: int, created_at_rfc3339: str):
        return {
            "name": self.curve_name,
            "public_key": self.public_key_pem(handle),
            "certificate_chain": "",
            "creation_time": created_at_rfc3339,
        }


KEY_TYPES: dict[str, KeyType] = {kt.name: kt for kt in (ChaCha20Poly1305(), EcdsaP256())}


def key_type(name: str) -> KeyType:
    try:
        return KEY_TYPES[name]
    except KeyError:
        raise InvalidRequest(f"unknown key type; supported: {', '.join(sorted(KEY_TYPES))}") from None
