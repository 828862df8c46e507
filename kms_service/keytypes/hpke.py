"""Public-key encryption with HPKE (RFC 9180): X25519 and the post-quantum hybrid MLKEM768-X25519."""

from __future__ import annotations

import base64
import os
from dataclasses import dataclass, field
from typing import Any, ClassVar

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hpke
from cryptography.hazmat.primitives.asymmetric import mlkem, x25519

from kms_service.errors import RefusedAsServerError
from kms_service.keytypes.asymmetric import pem_public, spki_der
from kms_service.keytypes.base import (
    EXPORT_ENCRYPTION_KEY,
    EXPORT_PUBLIC_KEY,
    DecryptionFailed,
    EncryptOptions,
    KeyType,
    b64_text,
)
from kms_service.material import KeyMaterial, Origin


@dataclass(frozen=True, slots=True)
class HpkeHandle:
    private: Any = field(repr=False)
    public: Any


class _Hpke(KeyType):
    """HPKE base mode with HKDF-SHA256 and ChaCha20-Poly1305, single-shot: the body is ``enc ‖ ct`` as RFC
    9180's Seal gives it, and the request's ``context`` is HPKE's ``info``. Anyone holding the public key
    encrypts offline with any HPKE library; only the service opens. ``associated_data`` is refused: the
    single-shot API of ``cryptography`` takes no aad, and no construction is made up here to bind one."""

    supports_encryption = True
    symmetric = False
    context_is_info = True
    KEM: ClassVar[Any]
    PRIVATE_SIZE: ClassVar[int]

    @property
    def suite(self) -> hpke.Suite:
        return hpke.Suite(self.KEM, hpke.KDF.HKDF_SHA256, hpke.AEAD.CHACHA20_POLY1305)

    def generate(self, key_size: int | None = None) -> KeyMaterial:
        self._no_key_size(key_size)
        return self._material(os.urandom(self.PRIVATE_SIZE), Origin.GENERATED)

    def import_key(self, raw: bytes) -> KeyMaterial:
        if len(raw) != self.PRIVATE_SIZE:
            raise RefusedAsServerError(f"invalid key size {len(raw)} bytes for key type {self.name}")
        return self._material(bytes(raw), Origin.IMPORTED)

    def _material(self, raw: bytes, origin: str) -> KeyMaterial:
        return KeyMaterial.new(raw, self.public_key(raw), origin=origin)

    def load(self, material: KeyMaterial) -> HpkeHandle:
        if len(material.key) != self.PRIVATE_SIZE:
            raise ValueError(f"{self.name} key material must be {self.PRIVATE_SIZE} bytes")
        private = self._private(material.key)
        return HpkeHandle(private, private.public_key())

    def _private(self, raw: bytes) -> Any:
        raise NotImplementedError

    def public_text(self, raw: bytes) -> str:
        """The public key as shown on read and export."""
        raise NotImplementedError

    def encrypt(self, handle: HpkeHandle, plaintext: bytes, options: EncryptOptions) -> bytes:
        return self.suite.encrypt(plaintext, handle.public, info=options.context or b"")

    def decrypt(self, handle: HpkeHandle, body: bytes, options: EncryptOptions) -> bytes:
        try:
            return self.suite.decrypt(body, handle.private, info=options.context or b"")
        except (InvalidTag, ValueError):
            raise DecryptionFailed("hpke: message authentication failed") from None

    def key_entry(
        self,
        material: KeyMaterial,
        created_at_unix: int,
        created_at_rfc3339: str,
        *,
        derived: bool = False,
        context: bytes | None = None,
    ) -> dict[str, Any]:
        return {
            "name": self.name,
            "public_key": self.public_text(material.key),
            "certificate_chain": "",
            "creation_time": created_at_rfc3339,
        }

    def export(self, material: KeyMaterial, export_type: str) -> str:
        if export_type == EXPORT_ENCRYPTION_KEY:
            return b64_text(material.key)
        if export_type == EXPORT_PUBLIC_KEY:
            return self.public_text(material.key)
        return super().export(material, export_type)


class HpkeX25519(_Hpke):
    """DHKEM(X25519, HKDF-SHA256). The private key is X25519's raw 32 bytes; the public key is PKIX PEM."""

    name = "hpke-x25519"
    KEM = hpke.KEM.X25519
    PRIVATE_SIZE = 32

    def _private(self, raw: bytes) -> x25519.X25519PrivateKey:
        return x25519.X25519PrivateKey.from_private_bytes(raw)

    def public_key(self, key: bytes) -> bytes:
        return spki_der(self._private(key).public_key())

    def public_text(self, raw: bytes) -> str:
        return pem_public(self._private(raw).public_key())


class HpkeMlKem768X25519(_Hpke):
    """The post-quantum hybrid KEM MLKEM768-X25519 (X-Wing's combination, as ``cryptography`` implements it).
    The private key is ML-KEM-768's 64-byte seed ‖ X25519's 32 bytes. No PKIX encoding exists for the pair,
    so the public key is shown as base64 of ML-KEM-768's encapsulation key (1184 bytes) ‖ X25519's (32)."""

    name = "hpke-mlkem768-x25519"
    KEM = hpke.KEM.MLKEM768_X25519
    PRIVATE_SIZE = 64 + 32

    def _private(self, raw: bytes) -> hpke.MLKEM768X25519PrivateKey:
        return hpke.MLKEM768X25519PrivateKey(
            mlkem.MLKEM768PrivateKey.from_seed_bytes(raw[:64]), x25519.X25519PrivateKey.from_private_bytes(raw[64:])
        )

    def public_text(self, raw: bytes) -> str:
        kem = mlkem.MLKEM768PrivateKey.from_seed_bytes(raw[:64]).public_key().public_bytes_raw()
        dh = x25519.X25519PrivateKey.from_private_bytes(raw[64:]).public_key().public_bytes_raw()
        return b64_text(kem + dh)


def hpke_mlkem768_x25519_public_key(text: str) -> hpke.MLKEM768X25519PublicKey:
    """A client's view of ``HpkeMlKem768X25519.public_text``: the HPKE public key to seal to."""
    raw = base64.b64decode(text)
    return hpke.MLKEM768X25519PublicKey(
        mlkem.MLKEM768PublicKey.from_public_bytes(raw[:1184]), x25519.X25519PublicKey.from_public_bytes(raw[1184:])
    )
