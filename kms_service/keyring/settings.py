"""A key's settings: ``KeySettings`` carries every Vault key setting together with the rules for changing it
(create, config, rotation retention, trim, delete), so the service only locks the row, asks the settings for
the new value, and stores it. ``KeyConfigChange`` is one config request. Pure; no I/O."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from datetime import datetime
from typing import Any

from kms_service.errors import InvalidRequest, RefusedAsServerError
from kms_service.keyring.wire import MAX_VERSION
from kms_service.keytypes.base import HMAC_MAX_KEY_SIZE, HMAC_MIN_KEY_SIZE
from kms_service.keytypes.registry import KEY_TYPES

MIN_AUTO_ROTATE_PERIOD = 3600

# custom_metadata bounds (those of Vault's KV v2 custom_metadata).
MAX_METADATA_ENTRIES = 64
MAX_METADATA_KEY_LENGTH = 128
MAX_METADATA_VALUE_LENGTH = 512


def _checked_retention(value: int) -> int:
    if not 0 <= value <= MAX_VERSION:
        raise InvalidRequest("retain_versions must be 0 (keep every version) or a positive number of versions")
    return value


def checked_metadata(value: Any) -> dict[str, str]:
    """A key's ``custom_metadata``: a map of strings, bounded, so a key row stays small."""
    if not isinstance(value, Mapping):
        raise InvalidRequest("custom_metadata must be a map of strings")
    if len(value) > MAX_METADATA_ENTRIES:
        raise InvalidRequest(f"custom_metadata may hold at most {MAX_METADATA_ENTRIES} entries")
    for k, v in value.items():
        if not isinstance(k, str) or not isinstance(v, str):
            raise InvalidRequest("custom_metadata must be a map of strings")
        if not 1 <= len(k) <= MAX_METADATA_KEY_LENGTH:
            raise InvalidRequest(f"custom_metadata keys must be 1 to {MAX_METADATA_KEY_LENGTH} characters")
        if len(v) > MAX_METADATA_VALUE_LENGTH:
            raise InvalidRequest(f"custom_metadata values must be at most {MAX_METADATA_VALUE_LENGTH} characters")
    return dict(sorted(value.items()))


@dataclass(frozen=True)
class KeyConfigChange:
    """A ``keys/:name/config`` request: None means "leave as it is"."""

    min_decryption_version: int | None = None
    min_encryption_version: int | None = None
    deletion_allowed: bool | None = None
    exportable: bool | None = None
    allow_plaintext_backup: bool | None = None
    auto_rotate_period: int | None = None
    retain_versions: int | None = None
    custom_metadata: Mapping[str, str] | None = None


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
    # An imported key may be rotated here (Vault's allow_rotation on import).
    allow_imported_key_rotation: bool = False
    # Keep the newest N versions decryptable: each rotation advances min_decryption_version (0: off).
    retain_versions: int = 0
    # The operator's labels (checked_metadata); keys can be listed by them.
    custom_metadata: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

    @classmethod
    def for_new_key(
        cls,
        key_type: str,
        *,
        derived: bool = False,
        convergent_encryption: bool = False,
        exportable: bool = False,
        allow_plaintext_backup: bool = False,
        auto_rotate_period: int = 0,
        key_size: int = 0,
        retain_versions: int = 0,
        custom_metadata: Mapping[str, str] | None = None,
    ) -> KeySettings:
        """The settings of a key created with POST keys/:name, after Vault's checks in Vault's order
        (pathPolicyWrite, then the lock manager's per-type rules). ``key_size`` (bytes, hmac only; 0 = the
        default, 32) is checked here and then given to ``KeyType.generate``; it is not a setting: the
        version's key carries it. Errors: ``InvalidRequest`` (400 in Vault) or ``RefusedAsServerError`` (Vault's
        plain error, a 500)."""
        if auto_rotate_period != 0 and auto_rotate_period < MIN_AUTO_ROTATE_PERIOD:
            raise InvalidRequest("auto rotate period must be 0 to disable or at least an hour")
        if convergent_encryption and not derived:
            raise InvalidRequest("convergent encryption requires derivation to be enabled")
        kt = KEY_TYPES.get(key_type)
        if kt is None:
            raise InvalidRequest("unknown key type")  # Vault appends the value; we never echo it
        if key_size != 0:
            if not kt.variable_key_size:
                raise InvalidRequest(f"key_size is not valid for algorithm {kt.name}")
            if not HMAC_MIN_KEY_SIZE <= key_size <= HMAC_MAX_KEY_SIZE:
                raise InvalidRequest(f"invalid key_size {key_size}")
        if derived and not kt.supports_derivation:
            raise RefusedAsServerError(
                f"key derivation and convergent encryption not supported for keys of type {kt.name}"
            )
        if convergent_encryption and not kt.supports_convergent_encryption:
            raise RefusedAsServerError(f"convergent encryption not supported for keys of type {kt.name}")
        return cls(
            derived=derived,
            convergent_encryption=convergent_encryption,
            exportable=exportable,
            allow_plaintext_backup=allow_plaintext_backup,
            auto_rotate_period=auto_rotate_period,
            retain_versions=_checked_retention(retain_versions),
            custom_metadata=checked_metadata(custom_metadata or {}),
        )

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
                retain_versions=(
                    self.retain_versions
                    if change.retain_versions is None
                    else _checked_retention(change.retain_versions)
                ),
                custom_metadata=(
                    self.custom_metadata if change.custom_metadata is None else checked_metadata(change.custom_metadata)
                ),
            ),
            warnings,
        )

    def after_rotation(self, latest_version: int) -> KeySettings:
        """Version retention: once ``latest_version`` exists, only the newest ``retain_versions`` stay
        decryptable (min_encryption_version follows when it would fall below). Never moves backwards."""
        if not self.retain_versions:
            return self
        floor = max(self.min_decryption_version, latest_version - self.retain_versions + 1)
        min_enc = self.min_encryption_version
        if min_enc and min_enc < floor:
            min_enc = floor
        return replace(self, min_decryption_version=floor, min_encryption_version=min_enc)

    def retired_by_rotation(self, latest_version: int) -> list[int]:
        """The versions the next rotation would make undecryptable (retention's dry run)."""
        after = self.after_rotation(latest_version + 1)
        return list(range(self.min_decryption_version, after.min_decryption_version))

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
