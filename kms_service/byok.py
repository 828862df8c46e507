"""Vault's BYOK key wrapping (``keys/:name/import``, ``import_version``, ``byok-export``). Pure, no I/O.

A blob is ``base64( RSA-OAEP(wrapping public key, ephemeral AES-256 key) ‖ AES-KWP(ephemeral key, target) )``
(CKM_RSA_AES_KEY_WRAP): OAEP uses ``hash_function`` for both the digest and MGF1 and an empty label; KWP is
RFC 5649 AES key wrap with padding. The target is raw key bytes for symmetric and hmac keys and PKCS#8 DER
for asymmetric ones (``KeyType.byok_target`` / ``KeyType.import_key``).

Vault always unwraps with its RSA-4096 wrapping key, so its RSA part is 512 bytes; here it is the wrapping
key's modulus size, which is the same thing for that key.
"""

from __future__ import annotations

import base64
import os

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.keywrap import InvalidUnwrap, aes_key_unwrap_with_padding, aes_key_wrap_with_padding

from kms_service.errors import InvalidRequest, RefusedAsServerError

# Vault's hash_function names (case-insensitive).
BYOK_HASH_FUNCTIONS: dict[str, type[hashes.HashAlgorithm]] = {
    "SHA1": hashes.SHA1,
    "SHA224": hashes.SHA224,
    "SHA256": hashes.SHA256,
    "SHA384": hashes.SHA384,
    "SHA512": hashes.SHA512,
}
DEFAULT_BYOK_HASH = "SHA256"
EPHEMERAL_KEY_SIZE = 32


def byok_hash(name: str) -> hashes.HashAlgorithm:
    """The OAEP hash for ``hash_function``. Unknown: Vault's ``unknown hash function`` (a 400 on import;
    Vault appends the value, which we never echo)."""
    try:
        return BYOK_HASH_FUNCTIONS[name.upper()]()
    except KeyError:
        raise InvalidRequest("unknown hash function") from None


def _oaep(algorithm: hashes.HashAlgorithm) -> padding.OAEP:
    return padding.OAEP(mgf=padding.MGF1(algorithm), algorithm=algorithm, label=None)


def wrap_byok(public_key: rsa.RSAPublicKey, key_bytes: bytes, hash_function: str = DEFAULT_BYOK_HASH) -> str:
    """A BYOK blob (standard base64) carrying ``key_bytes`` to the holder of ``public_key``'s private key."""
    algorithm = byok_hash(hash_function)
    ephemeral = os.urandom(EPHEMERAL_KEY_SIZE)
    wrapped_ephemeral = public_key.encrypt(ephemeral, _oaep(algorithm))
    return base64.b64encode(wrapped_ephemeral + aes_key_wrap_with_padding(ephemeral, key_bytes)).decode("ascii")


def unwrap_byok(wrapping_private_key: rsa.RSAPrivateKey, blob: bytes, hash_function: str = DEFAULT_BYOK_HASH) -> bytes:
    """The target key inside a decoded BYOK blob. Failures are Vault's plain errors (500 there):
    ``RefusedAsServerError``; an unknown ``hash_function`` is ``InvalidRequest``."""
    algorithm = byok_hash(hash_function)
    rsa_size = (wrapping_private_key.key_size + 7) // 8
    if len(blob) <= rsa_size:
        raise RefusedAsServerError("provided ciphertext is too short")
    try:
        ephemeral = wrapping_private_key.decrypt(blob[:rsa_size], _oaep(algorithm))
    except ValueError:
        raise RefusedAsServerError("crypto/rsa: decryption error") from None
    if len(ephemeral) != EPHEMERAL_KEY_SIZE:
        raise RefusedAsServerError("expected ephemeral AES key to be 256-bit")
    try:
        return aes_key_unwrap_with_padding(ephemeral, blob[rsa_size:])
    except (InvalidUnwrap, ValueError):
        raise RefusedAsServerError("failed to unwrap the target key: integrity check failed") from None
