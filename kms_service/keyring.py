"""The key model: a named key, its versions, and Vault's version rules. Pure; no I/O.

A ``Key`` is an immutable snapshot of what the database holds, with each version's crypto object already
built. Mutations (rotate, config) happen in storage inside a transaction; the cache then swaps in a new
snapshot, so a failed write can never leave a half-changed key in memory.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from kms_service.errors import InvalidRequest
from kms_service.keytypes import KeyType

OUTPUT_PREFIX = "vault-kms"
# Prefixes accepted on input: ours, and Vault's so that ciphertexts from Vault docs and clients parse.
INPUT_PREFIXES = ("vault-kms", "vault")

KEY_NAME_RE = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_.-]{0,126}[A-Za-z0-9_])?", re.ASCII)
_VERSION_RE = re.compile(r"[1-9][0-9]{0,9}", re.ASCII)
MAX_VERSION = 2**31 - 1


def validate_key_name(name: str) -> str:
    if not isinstance(name, str) or not KEY_NAME_RE.fullmatch(name):
        raise InvalidRequest(
            "invalid key name: use 1 to 128 ASCII letters, digits, '_', '-' or '.', "
            "starting and ending with a letter, digit or '_'"
        )
    return name


def b64decode_strict(value: str) -> bytes:
    """Standard base64 with padding; like Go's StdEncoding, CR and LF are skipped, nothing else is."""
    cleaned = value.replace("\r", "").replace("\n", "")
    try:
        return base64.b64decode(cleaned.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        raise ValueError("illegal base64 data") from None


def b64encode(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


@dataclass(frozen=True)
class Versioned:
    """A parsed ``<prefix>:v<N>:<payload>`` value (ciphertext or signature)."""

    version: int
    payload: str


def parse_versioned(value: str, what: str) -> Versioned:
    """Parse ``vault-kms:v3:...`` or ``vault:v3:...``; ``what`` names the field in error messages."""
    prefix, sep, rest = value.partition(":")
    if not sep or prefix not in INPUT_PREFIXES or not rest.startswith("v"):
        raise InvalidRequest(f"invalid {what}: no prefix")
    version_text, sep, payload = rest[1:].partition(":")
    if not sep:
        raise InvalidRequest(f"invalid {what}: wrong number of fields")
    if not _VERSION_RE.fullmatch(version_text) or int(version_text) > MAX_VERSION:
        raise InvalidRequest(f"invalid {what}: version number could not be decoded")
    return Versioned(int(version_text), payload)


def format_versioned(version: int, payload: bytes, urlsafe: bool = False) -> str:
    if urlsafe:
        text = base64.urlsafe_b64encode(payload).rstrip(b"=").decode("ascii")
    else:
        text = b64encode(payload)
    return f"{OUTPUT_PREFIX}:v{version}:{text}"


@dataclass(frozen=True)
class KeyVersion:
    version: int
    created_at: datetime
    handle: Any = field(repr=False)


@dataclass(frozen=True)
class Key:
    name: str
    key_type: KeyType
    latest_version: int
    min_decryption_version: int
    min_encryption_version: int
    deletion_allowed: bool
    exportable: bool
    allow_plaintext_backup: bool
    generation: int
    versions: Mapping[int, KeyVersion] = field(repr=False)

    # -- version rules (Vault's) -------------------------------------------------------------------

    def version_for_encryption(self, requested: int, operation: str = "encryption") -> KeyVersion:
        """0 means latest; otherwise min_encryption_version <= requested <= latest."""
        if requested < 0:
            raise InvalidRequest(f"requested version for {operation} is negative")
        if requested > self.latest_version:
            raise InvalidRequest(f"requested version for {operation} is higher than the latest key version")
        if requested == 0:
            requested = self.latest_version
        if self.min_encryption_version and requested < self.min_encryption_version:
            raise InvalidRequest(f"requested version for {operation} is less than the minimum {operation} key version")
        return self._version(requested)

    def version_for_decryption(self, version: int, what: str) -> KeyVersion:
        if version > self.latest_version:
            raise InvalidRequest(f"invalid {what}: version is too new")
        if version < self.min_decryption_version:
            raise InvalidRequest("ciphertext or signature version is disallowed by policy (too old)")
        return self._version(version)

    def _version(self, version: int) -> KeyVersion:
        try:
            return self.versions[version]
        except KeyError:
            raise InvalidRequest("no such key version") from None

    # -- operations ----------------------------------------------------------------------------------

    def encrypt(self, plaintext: bytes, key_version: int = 0, associated_data: bytes = b"") -> tuple[str, int]:
        self._check_associated_data(associated_data)
        if not self.key_type.supports_encryption:
            raise InvalidRequest(f"message encryption not supported for key type {self.key_type.name}")
        kv = self.version_for_encryption(key_version)
        body = self.key_type.encrypt(kv.handle, plaintext, associated_data)
        return format_versioned(kv.version, body), kv.version

    def decrypt(self, ciphertext: str, associated_data: bytes = b"") -> bytes:
        self._check_associated_data(associated_data)
        if not self.key_type.supports_encryption:
            raise InvalidRequest(f"message decryption not supported for key type {self.key_type.name}")
        parsed = parse_versioned(ciphertext, "ciphertext")
        kv = self.version_for_decryption(parsed.version, "ciphertext")
        try:
            body = b64decode_strict(parsed.payload)
        except ValueError:
            raise InvalidRequest("invalid ciphertext: could not decode base64") from None
        return self.key_type.decrypt(kv.handle, body, associated_data)

    def rewrap(self, ciphertext: str, key_version: int = 0, associated_data: bytes = b"") -> tuple[str, int]:
        plaintext = self.decrypt(ciphertext, associated_data)
        return self.encrypt(plaintext, key_version, associated_data)

    def sign(
        self,
        data: bytes,
        hash_name: str,
        key_version: int = 0,
        prehashed: bool = False,
        marshaling: str = "asn1",
    ) -> tuple[str, int]:
        if not self.key_type.supports_signing:
            raise InvalidRequest(f"key type {self.key_type.name} does not support signing")
        kv = self.version_for_encryption(key_version, "signing")
        signature = self.key_type.sign(kv.handle, data, hash_name, prehashed, marshaling)
        return format_versioned(kv.version, signature, urlsafe=marshaling == "jws"), kv.version

    def verify(
        self, data: bytes, signature: str, hash_name: str, prehashed: bool = False, marshaling: str = "asn1"
    ) -> bool:
        if not self.key_type.supports_signing:
            raise InvalidRequest(f"key type {self.key_type.name} does not support verification")
        parsed = parse_versioned(signature, "signature")
        kv = self.version_for_decryption(parsed.version, "signature")
        try:
            if marshaling == "jws":
                raw = base64.urlsafe_b64decode(_pad(parsed.payload).encode("ascii"))
                if not re.fullmatch(r"[A-Za-z0-9_-]*", parsed.payload, re.ASCII):
                    raise ValueError
            else:
                raw = b64decode_strict(parsed.payload)
        except (ValueError, binascii.Error, UnicodeEncodeError):
            raise InvalidRequest("invalid base64 signature value") from None
        return self.key_type.verify(kv.handle, data, raw, hash_name, prehashed, marshaling)

    def _check_associated_data(self, associated_data: bytes) -> None:
        if associated_data and not self.key_type.supports_associated_data:
            raise InvalidRequest(f"associated_data provided for non-AEAD cipher suite {self.key_type.name}")

    # -- presentation --------------------------------------------------------------------------------

    def body(self) -> dict[str, Any]:
        """The key as Vault's GET transit/keys/:name shows it; only live versions are listed."""
        keys = {}
        for version in range(self.min_decryption_version, self.latest_version + 1):
            kv = self.versions.get(version)
            if kv is None:
                continue
            created = kv.created_at.astimezone(UTC)
            keys[str(version)] = self.key_type.key_entry(
                kv.handle, int(created.timestamp()), created.isoformat().replace("+00:00", "Z")
            )
        return {
            "name": self.name,
            "type": self.key_type.name,
            "derived": False,
            "deletion_allowed": self.deletion_allowed,
            "exportable": self.exportable,
            "allow_plaintext_backup": self.allow_plaintext_backup,
            "latest_version": self.latest_version,
            "min_available_version": 0,
            "min_decryption_version": self.min_decryption_version,
            "min_encryption_version": self.min_encryption_version,
            "supports_encryption": self.key_type.supports_encryption,
            "supports_decryption": self.key_type.supports_encryption,
            "supports_signing": self.key_type.supports_signing,
            "supports_derivation": self.key_type.supports_derivation,
            "auto_rotate_period": 0,
            "imported_key": False,
            "keys": keys,
        }


def _pad(text: str) -> str:
    return text + "=" * (-len(text) % 4)
