"""The key model: a named key, its versions, its settings, and Vault's version rules. Pure; no I/O.

A ``Key`` is an immutable snapshot of what the database holds. Its ``KeySettings`` carry every Vault key
setting together with the rules for changing them (config, trim, delete), so the service only locks the
row, asks the settings for the new value, and stores it. Mutations happen in storage inside a transaction;
the cache then swaps in a new snapshot, so a failed write never leaves a half-changed key in memory.
Each version's crypto object is built lazily, on first use (the service does that off the event loop).
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from datetime import UTC, datetime
from typing import Any

from kms_service.errors import InvalidRequest
from kms_service.keytypes import EncryptOptions, KeyType, SignOptions
from kms_service.material import KeyMaterial

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


MIN_AUTO_ROTATE_PERIOD = 3600


@dataclass(frozen=True)
class KeyConfigChange:
    """A ``keys/:name/config`` request: None means "leave as it is"."""

    min_decryption_version: int | None = None
    min_encryption_version: int | None = None
    deletion_allowed: bool | None = None
    exportable: bool | None = None
    allow_plaintext_backup: bool | None = None
    auto_rotate_period: int | None = None


@dataclass(frozen=True)
class KeySettings:
    """Every Vault key setting, with the rules for changing them. Each field is one column of ``keys``
    with the same name (the repository maps them by name): a new setting is one field here, one column
    there, and its rule below."""

    min_decryption_version: int = 1
    min_encryption_version: int = 0
    # Versions below this are trimmed: gone for good (Vault's trim).
    min_available_version: int = 0
    deletion_allowed: bool = False
    exportable: bool = False
    allow_plaintext_backup: bool = False
    # Seconds; 0 disables auto-rotation.
    auto_rotate_period: int = 0
    derived: bool = False
    convergent_encryption: bool = False
    # OpenBao's soft delete: kept, but refused for every use until restored.
    soft_deleted: bool = False

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

    def configured(self, change: KeyConfigChange, latest_version: int) -> tuple[KeySettings, list[str]]:
        """The settings after ``change`` (Vault's pathKeysConfigWrite rules), and its warnings."""
        warnings: list[str] = []
        min_dec = self.min_decryption_version
        if change.min_decryption_version is not None:
            min_dec = change.min_decryption_version
            if min_dec < 0:
                raise InvalidRequest("min decryption version cannot be negative")
            if min_dec == 0:
                min_dec = 1
                warnings.append("transit key numbering starts at 1; forcing minimum to 1")
            if min_dec > latest_version:
                raise InvalidRequest(
                    f"cannot set min decryption version of {min_dec}, latest key version is {latest_version}"
                )
            if min_dec < self.min_available_version:
                raise InvalidRequest("min decryption version should not be less then min available version")
        min_enc = self.min_encryption_version
        if change.min_encryption_version is not None:
            min_enc = change.min_encryption_version
            if min_enc < 0:
                raise InvalidRequest("min encryption version cannot be negative")
            if min_enc > latest_version:
                raise InvalidRequest(
                    f"cannot set min encryption version of {min_enc}, latest key version is {latest_version}"
                )
            if min_enc and min_enc < self.min_available_version:
                raise InvalidRequest("min encryption version should not be less than min available version")
        if min_enc and min_enc < min_dec:
            raise InvalidRequest(
                "cannot set min encryption/decryption values; min encryption version of "
                f"{min_enc} must be greater than or equal to min decryption version of {min_dec}"
            )
        period = self.auto_rotate_period
        if change.auto_rotate_period is not None:
            period = change.auto_rotate_period
            if period != 0 and period < MIN_AUTO_ROTATE_PERIOD:
                raise InvalidRequest("auto rotate period must be 0 to disable or at least an hour")
        return (
            replace(
                self,
                min_decryption_version=min_dec,
                min_encryption_version=min_enc,
                deletion_allowed=self.deletion_allowed if change.deletion_allowed is None else change.deletion_allowed,
                # One-way flags: false is ignored, as in Vault.
                exportable=self.exportable or bool(change.exportable),
                allow_plaintext_backup=self.allow_plaintext_backup or bool(change.allow_plaintext_backup),
                auto_rotate_period=period,
            ),
            warnings,
        )

    def trimmed(self, min_available_version: int) -> KeySettings:
        """The settings after trimming every version below ``min_available_version`` (Vault's rules)."""
        if min_available_version < 0:
            raise InvalidRequest("minimum available version cannot be negative")
        if min_available_version == 0:
            raise InvalidRequest("minimum available version should be positive")
        if min_available_version < self.min_available_version:
            raise InvalidRequest("minimum available version cannot be decremented")
        if self.min_encryption_version == 0:
            raise InvalidRequest("minimum available version cannot be set when minimum encryption version is not set")
        if self.min_decryption_version == 0:
            raise InvalidRequest("minimum available version cannot be set when minimum decryption version is not set")
        if min_available_version > self.min_encryption_version:
            raise InvalidRequest("minimum available version cannot be greater than minmum encryption version")
        if min_available_version > self.min_decryption_version:
            raise InvalidRequest("minimum available version cannot be greater than minimum decryption version")
        return replace(self, min_available_version=min_available_version)

    def check_deletable(self) -> None:
        if not self.deletion_allowed:
            raise InvalidRequest("deletion is not allowed for this key")

    def auto_rotation_due(self, latest_created_at: datetime, now: datetime) -> bool:
        return self.auto_rotate_period > 0 and (now - latest_created_at).total_seconds() > self.auto_rotate_period


class KeyVersion:
    """One version: its stored material and, once first needed, its crypto object."""

    __slots__ = ("version", "created_at", "material", "_key_type", "_handle")

    def __init__(self, version: int, created_at: datetime, material: KeyMaterial, key_type: KeyType) -> None:
        self.version = version
        self.created_at = created_at
        self.material = material
        self._key_type = key_type
        self._handle: Any = None

    def __repr__(self) -> str:
        return f"KeyVersion({self.version}, loaded={self.loaded})"

    @property
    def key_type(self) -> KeyType:
        return self._key_type

    @property
    def loaded(self) -> bool:
        return self._handle is not None

    def load(self) -> Any:
        """Build the crypto object (slow for RSA: the service calls this in a worker thread first)."""
        if self._handle is None:
            self._handle = self._key_type.load(self.material)
        return self._handle

    @property
    def handle(self) -> Any:
        return self.load()


@dataclass(frozen=True)
class Key:
    name: str
    key_type: KeyType
    latest_version: int
    settings: KeySettings
    generation: int
    versions: Mapping[int, KeyVersion] = field(repr=False)

    # Read-side shortcuts to the settings the version rules use.
    @property
    def min_decryption_version(self) -> int:
        return self.settings.min_decryption_version

    @property
    def min_encryption_version(self) -> int:
        return self.settings.min_encryption_version

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

    def encrypt(self, plaintext: bytes, options: EncryptOptions, key_version: int = 0) -> tuple[str, int]:
        self._check_associated_data(options)
        if not self.key_type.supports_encryption:
            raise InvalidRequest(f"message encryption not supported for key type {self.key_type.name}")
        kv = self.version_for_encryption(key_version)
        body = self.key_type.encrypt(kv.handle, plaintext, options)
        return format_versioned(kv.version, body), kv.version

    def decrypt(self, ciphertext: str, options: EncryptOptions) -> bytes:
        self._check_associated_data(options)
        if not self.key_type.supports_encryption:
            raise InvalidRequest(f"message decryption not supported for key type {self.key_type.name}")
        parsed = parse_versioned(ciphertext, "ciphertext")
        kv = self.version_for_decryption(parsed.version, "ciphertext")
        try:
            body = b64decode_strict(parsed.payload)
        except ValueError:
            raise InvalidRequest("invalid ciphertext: could not decode base64") from None
        return self.key_type.decrypt(kv.handle, body, options)

    def rewrap(self, ciphertext: str, options: EncryptOptions, key_version: int = 0) -> tuple[str, int]:
        plaintext = self.decrypt(ciphertext, options)
        return self.encrypt(plaintext, options, key_version)

    def sign(self, data: bytes, options: SignOptions, key_version: int = 0) -> tuple[str, int]:
        if not self.key_type.supports_signing:
            raise InvalidRequest(f"key type {self.key_type.name} does not support signing")
        kv = self.version_for_encryption(key_version, "signing")
        signature = self.key_type.sign(kv.handle, data, options)
        return format_versioned(kv.version, signature, urlsafe=options.marshaling == "jws"), kv.version

    def verify(self, data: bytes, signature: str, options: SignOptions) -> bool:
        if not self.key_type.supports_signing:
            raise InvalidRequest(f"key type {self.key_type.name} does not support verification")
        parsed = parse_versioned(signature, "signature")
        kv = self.version_for_decryption(parsed.version, "signature")
        try:
            if options.marshaling == "jws":
                raw = base64.urlsafe_b64decode(_pad(parsed.payload).encode("ascii"))
                if not re.fullmatch(r"[A-Za-z0-9_-]*", parsed.payload, re.ASCII):
                    raise ValueError
            else:
                raw = b64decode_strict(parsed.payload)
        except (ValueError, binascii.Error, UnicodeEncodeError):
            raise InvalidRequest("invalid base64 signature value") from None
        return self.key_type.verify(kv.handle, data, raw, options)

    def _check_associated_data(self, options: EncryptOptions) -> None:
        if options.associated_data and not self.key_type.supports_associated_data:
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
                kv.material, int(created.timestamp()), created.isoformat().replace("+00:00", "Z")
            )
        settings = self.settings
        body: dict[str, Any] = {
            "name": self.name,
            "type": self.key_type.name,
            "derived": settings.derived,
            "deletion_allowed": settings.deletion_allowed,
            "exportable": settings.exportable,
            "allow_plaintext_backup": settings.allow_plaintext_backup,
            "latest_version": self.latest_version,
            "min_available_version": settings.min_available_version,
            "min_decryption_version": settings.min_decryption_version,
            "min_encryption_version": settings.min_encryption_version,
            "supports_encryption": self.key_type.supports_encryption,
            "supports_decryption": self.key_type.supports_encryption,
            "supports_signing": self.key_type.supports_signing,
            "supports_derivation": self.key_type.supports_derivation,
            "auto_rotate_period": settings.auto_rotate_period,
            "imported_key": False,
            "keys": keys,
        }
        if settings.soft_deleted:
            body["soft_deleted"] = True
        if settings.derived:
            body["kdf"] = "hkdf_sha256"
            body["convergent_encryption"] = settings.convergent_encryption
            if settings.convergent_encryption:
                body["convergent_encryption_version"] = -1
        return body


def _pad(text: str) -> str:
    return text + "=" * (-len(text) % 4)
