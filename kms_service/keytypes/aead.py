"""The AEAD encryption types: AES-GCM, AES-GCM-SIV, ChaCha20-Poly1305 and XChaCha20-Poly1305. The body is
nonce ‖ ciphertext ‖ tag(16); the stored key is the raw key."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, ClassVar

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, AESGCMSIV
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305 as _ChaCha20Poly1305Cipher
from nacl import bindings as sodium
from nacl.exceptions import CryptoError

from kms_service.errors import InvalidRequest
from kms_service.keytypes.base import (
    CONVERGENT_NONCE_KEY_SIZE,
    EXPORT_ENCRYPTION_KEY,
    MISSING_CONTEXT,
    DecryptionFailed,
    EncryptOptions,
    NonceSource,
    RawKeyType,
    b64_text,
    hkdf_sha256,
    hmac_digest,
)
from kms_service.material import KeyMaterial


class _XChaCha20Poly1305Cipher:
    """libsodium's XChaCha20-Poly1305 (IETF) with the same interface as cryptography's AEAD classes."""

    __slots__ = ("_key",)

    def __init__(self, key: bytes) -> None:
        self._key = key

    def encrypt(self, nonce: bytes, data: bytes, associated_data: bytes | None) -> bytes:
        return sodium.crypto_aead_xchacha20poly1305_ietf_encrypt(data, associated_data, nonce, self._key)

    def decrypt(self, nonce: bytes, data: bytes, associated_data: bytes | None) -> bytes:
        if len(data) < sodium.crypto_aead_xchacha20poly1305_ietf_ABYTES:
            raise InvalidTag()  # shorter than the tag (PyNaCl would raise a ValueError)
        try:
            return sodium.crypto_aead_xchacha20poly1305_ietf_decrypt(data, associated_data, nonce, self._key)
        except CryptoError:
            raise InvalidTag() from None


@dataclass(frozen=True, slots=True)
class AeadHandle:
    """One AEAD version: its raw key (the HKDF input for derived keys) and the cipher built on it."""

    key: bytes = field(repr=False)
    cipher: Any = field(repr=False)


class _Aead(RawKeyType):
    encrypts_many = True
    supports_encryption = True
    supports_derivation = True
    supports_convergent_encryption = True
    supports_associated_data = True
    NONCE_SIZE: ClassVar[int]
    TAG_SIZE: ClassVar[int] = 16
    AUTH_FAILED: ClassVar[str]

    def _cipher(self, key: bytes) -> Any:
        raise NotImplementedError

    def load(self, material: KeyMaterial) -> AeadHandle:
        key = self._raw(material)
        return AeadHandle(key, self._cipher(key))

    def derive(self, key: bytes, context: bytes, convergent: bool = False) -> tuple[bytes, bytes | None]:
        """The per-context AEAD key and, for convergent encryption, the nonce key (HKDF's next 32 bytes)."""
        if not context:
            raise InvalidRequest(MISSING_CONTEXT)
        if not convergent:
            return hkdf_sha256(key, context, self.KEY_SIZE), None
        out = hkdf_sha256(key, context, self.KEY_SIZE + CONVERGENT_NONCE_KEY_SIZE)
        return out[: self.KEY_SIZE], out[self.KEY_SIZE :]

    def encrypt(self, handle: AeadHandle, plaintext: bytes, options: EncryptOptions) -> bytes:
        convergent = options.nonce_source == NonceSource.CONVERGENT
        if options.context is None:
            if convergent:
                raise InvalidRequest(MISSING_CONTEXT)  # convergence needs a derived key
            cipher = handle.cipher
            nonce = os.urandom(self.NONCE_SIZE)
        else:
            key, nonce_key = self.derive(handle.key, options.context, convergent)
            cipher = self._cipher(key)
            if nonce_key is None:
                # Random nonces: 96-bit ones are safe up to ~2^32 encryptions per key (rotate before).
                nonce = os.urandom(self.NONCE_SIZE)
            else:
                nonce = hmac_digest(nonce_key, hashes.SHA256(), plaintext)[: self.NONCE_SIZE]
        return nonce + cipher.encrypt(nonce, plaintext, options.associated_data or None)

    def encrypt_many(self, handle: AeadHandle, plaintexts: list[bytes], options: EncryptOptions) -> list[bytes]:
        if options.context is not None or options.nonce_source == NonceSource.CONVERGENT:
            return super().encrypt_many(handle, plaintexts, options)
        # Random nonces for every plaintext from one draw of the OS's generator: as random as a draw each,
        # one system call instead of one per item.
        size, cipher, associated_data = self.NONCE_SIZE, handle.cipher, options.associated_data or None
        nonces = os.urandom(size * len(plaintexts))
        bodies = []
        for start, plaintext in zip(range(0, len(nonces), size), plaintexts, strict=True):
            nonce = nonces[start : start + size]
            bodies.append(nonce + cipher.encrypt(nonce, plaintext, associated_data))
        return bodies

    def decrypt(self, handle: AeadHandle, body: bytes, options: EncryptOptions) -> bytes:
        if len(body) < self.NONCE_SIZE:
            raise InvalidRequest("invalid ciphertext length")
        if options.context is None:
            cipher = handle.cipher
        else:
            # The convergent nonce key is not needed to open: the nonce travels in the body.
            cipher = self._cipher(self.derive(handle.key, options.context)[0])
        try:
            return cipher.decrypt(body[: self.NONCE_SIZE], body[self.NONCE_SIZE :], options.associated_data or None)
        except InvalidTag:
            raise DecryptionFailed(self.AUTH_FAILED) from None

    def decrypt_many(self, handle: AeadHandle, bodies: list[bytes], options: EncryptOptions) -> list[bytes | None]:
        if options.context is not None:
            return super().decrypt_many(handle, bodies, options)
        size, cipher, associated_data = self.NONCE_SIZE, handle.cipher, options.associated_data or None
        opened: list[bytes | None] = []
        for body in bodies:
            try:
                opened.append(cipher.decrypt(body[:size], body[size:], associated_data) if len(body) >= size else None)
            except InvalidTag:
                opened.append(None)
        return opened

    def export(self, material: KeyMaterial, export_type: str) -> str:
        if export_type == EXPORT_ENCRYPTION_KEY:
            return b64_text(material.key)
        return super().export(material, export_type)


class Aes128Gcm96(_Aead):
    """AES-128-GCM, 96-bit random (or convergent) nonce, as Vault's aes128-gcm96."""

    name = "aes128-gcm96"
    nonce_budget = True
    KEY_SIZE = 16
    NONCE_SIZE = 12
    AUTH_FAILED = "cipher: message authentication failed"

    def _cipher(self, key: bytes) -> AESGCM:
        return AESGCM(key)


class Aes256Gcm96(Aes128Gcm96):
    """AES-256-GCM, Vault's default key type."""

    name = "aes256-gcm96"
    KEY_SIZE = 32


class ChaCha20Poly1305(_Aead):
    """IETF ChaCha20-Poly1305 (RFC 8439); body = nonce(12) ‖ ciphertext ‖ tag(16), as Vault."""

    name = "chacha20-poly1305"
    nonce_budget = True
    KEY_SIZE = 32
    NONCE_SIZE = 12
    AUTH_FAILED = "chacha20poly1305: message authentication failed"

    def _cipher(self, key: bytes) -> _ChaCha20Poly1305Cipher:
        return _ChaCha20Poly1305Cipher(key)


class Aes256GcmSiv(_Aead):
    """AES-256-GCM-SIV (RFC 8452): nonce-misuse resistant, so a repeated random nonce leaks only whether two
    plaintexts are equal. Body = nonce(12) ‖ ciphertext ‖ tag(16), as the GCM types."""

    name = "aes256-gcm-siv"
    KEY_SIZE = 32
    NONCE_SIZE = 12
    AUTH_FAILED = "cipher: message authentication failed"

    def _cipher(self, key: bytes) -> AESGCMSIV:
        return AESGCMSIV(key)


class XChaCha20Poly1305(_Aead):
    """XChaCha20-Poly1305 through libsodium (OpenBao's type): a 24-byte random nonce, so no practical limit
    on encryptions per key version."""

    name = "xchacha20-poly1305"
    KEY_SIZE = 32
    NONCE_SIZE = 24
    AUTH_FAILED = "chacha20poly1305: message authentication failed"

    def _cipher(self, key: bytes) -> _XChaCha20Poly1305Cipher:
        return _XChaCha20Poly1305Cipher(key)
