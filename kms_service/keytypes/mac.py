"""The MAC-only types: AES-CMAC (NIST SP 800-38B) and ``hmac``. Neither encrypts nor signs."""

from __future__ import annotations

import os

from cryptography.hazmat.primitives import cmac as crypto_cmac
from cryptography.hazmat.primitives.ciphers import algorithms

from kms_service.errors import InvalidRequest, RefusedAsServerError
from kms_service.keytypes.base import HMAC_DEFAULT_KEY_SIZE, HMAC_MAX_KEY_SIZE, HMAC_MIN_KEY_SIZE, KeyType, RawKeyType
from kms_service.material import KeyMaterial, Origin


class _AesCmac(RawKeyType):
    """A dedicated AES key for CMAC only (as Vault Enterprise's aes*-cmac types): never the key of an
    encryption type, so no key serves two constructions. The full tag is 16 bytes; a request may truncate it
    to ``mac_length`` (8 to 16)."""

    supports_cmac = True

    def load(self, material: KeyMaterial) -> bytes:
        return self._raw(material)

    def cmac(self, handle: bytes, data: bytes) -> bytes:
        mac = crypto_cmac.CMAC(algorithms.AES(handle))
        mac.update(data)
        return mac.finalize()


class Aes128Cmac(_AesCmac):
    name = "aes128-cmac"
    KEY_SIZE = 16


class Aes256Cmac(_AesCmac):
    name = "aes256-cmac"
    KEY_SIZE = 32


class Hmac(KeyType):
    """Vault's ``hmac`` key type: the key is an HMAC key of ``key_size`` bytes (32..512, default 32); it only
    serves ``hmac/:name`` and verify with ``hmac``. Its body has ``key_size`` and no ``keys``. The envelope's
    own 32-byte HMAC key is generated like for every type but unused: the key itself is the HMAC key."""

    name = "hmac"
    lists_versions = False
    variable_key_size = True

    def generate(self, key_size: int | None = None) -> KeyMaterial:
        size = key_size or HMAC_DEFAULT_KEY_SIZE
        if not HMAC_MIN_KEY_SIZE <= size <= HMAC_MAX_KEY_SIZE:
            raise InvalidRequest(f"invalid key_size {size}")
        return KeyMaterial.new(os.urandom(size))

    def import_key(self, raw: bytes) -> KeyMaterial:
        if not HMAC_MIN_KEY_SIZE <= len(raw) <= HMAC_MAX_KEY_SIZE:
            raise RefusedAsServerError(f"invalid key size {len(raw)} bytes for key type {self.name}")
        return KeyMaterial.new(bytes(raw), origin=Origin.IMPORTED)

    def load(self, material: KeyMaterial) -> bytes:
        if not HMAC_MIN_KEY_SIZE <= len(material.key) <= HMAC_MAX_KEY_SIZE:
            raise ValueError("hmac key material must be 32 to 512 bytes")
        return material.key

    def hmac_key(self, material: KeyMaterial) -> bytes:
        return material.key

    def key_size(self, material: KeyMaterial) -> int:
        return len(material.key)
