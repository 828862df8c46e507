"""Plaintext key backups (``backup/:name`` → ``restore``): one key, every stored version, as base64 JSON. Pure.

The document holds the key's material in the clear, which is why Vault, and this service, make it only for
keys with both ``exportable`` and ``allow_plaintext_backup``. Its layout is this service's own, versioned
by ``format``; a backup restores here with every version number and setting, so every ciphertext,
signature and HMAC made before still works.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass, fields, replace
from datetime import datetime
from typing import Any

from kms_service.errors import InvalidRequest, KMSError
from kms_service.keyring import KEY_NAME_RE, MAX_VERSION, Key, KeySettings, checked_metadata
from kms_service.keytypes import KEY_TYPES
from kms_service.material import KeyMaterial

FORMAT = "kms-service-backup/1"


@dataclass(frozen=True)
class BackupVersion:
    version: int
    created_at: datetime
    material: KeyMaterial


@dataclass(frozen=True)
class Backup:
    name: str
    key_type: str
    latest_version: int
    settings: KeySettings
    versions: tuple[BackupVersion, ...]


def encode(key: Key, taken_at: datetime) -> str:
    return encode_versions(
        key.name,
        key.key_type.name,
        key.latest_version,
        key.settings,
        [BackupVersion(number, kv.created_at, kv.material) for number, kv in key.versions.items()],
        taken_at,
    )


def encode_versions(
    name: str,
    key_type: str,
    latest_version: int,
    key_settings: KeySettings,
    versions: list[BackupVersion],
    taken_at: datetime,
) -> str:
    """A backup from its parts (``migrate-from`` builds one from a Vault key and restores it here)."""
    settings: dict[str, Any] = {f.name: getattr(key_settings, f.name) for f in fields(KeySettings)}
    settings["custom_metadata"] = dict(key_settings.custom_metadata)
    settings["soft_deleted"] = False  # a restored key is usable
    document: dict[str, Any] = {
        "format": FORMAT,
        "name": name,
        "type": key_type,
        "latest_version": latest_version,
        "settings": settings,
        "backup_time": taken_at.isoformat(),
        "versions": {
            str(v.version): {
                "created_at": v.created_at.isoformat(),
                "material": base64.b64encode(v.material.to_bytes()).decode("ascii"),
            }
            for v in sorted(versions, key=lambda v: v.version)
        },
    }
    return base64.b64encode(json.dumps(document, sort_keys=True).encode()).decode("ascii")


def decode(text: str) -> Backup:
    """Parse a backup, as strictly as any request: a backup is input, and may have been edited. Any defect is
    one 400 that says nothing of the contents. (The material is checked against its type by the caller,
    which loads it off the event loop.)"""
    try:
        document = json.loads(base64.b64decode(text.encode("ascii"), validate=True))
        if not isinstance(document, dict) or document.get("format") != FORMAT:
            raise ValueError("format")
        key_type = _string(document["type"])
        if key_type not in KEY_TYPES:
            raise ValueError("type")
        versions = tuple(
            BackupVersion(_version(number), _timestamp(entry["created_at"]), _material(entry["material"]))
            for number, entry in sorted(document["versions"].items(), key=lambda item: _version(item[0]))
        )
        settings = _settings(document["settings"], key_type)
        backup = Backup(
            name=_string(document["name"]),
            key_type=key_type,
            latest_version=_version(document["latest_version"]),
            settings=settings,
            versions=versions,
        )
    except (ValueError, KeyError, TypeError, AttributeError, binascii.Error, UnicodeError, RecursionError):
        raise InvalidRequest("invalid backup: not a kms-service key backup") from None
    numbers = [v.version for v in backup.versions]
    # Contiguous up to the latest: what rotation and trim leave behind, and bounded by the versions present.
    if not numbers or numbers[-1] != backup.latest_version or numbers != list(range(numbers[0], numbers[-1] + 1)):
        raise InvalidRequest("invalid backup: its versions do not match its latest version")
    settings = backup.settings
    first = numbers[0]
    if not (
        settings.min_available_version <= first
        and max(first, 1) <= settings.min_decryption_version <= backup.latest_version
        and (
            settings.min_encryption_version == 0
            or settings.min_decryption_version <= settings.min_encryption_version <= backup.latest_version
        )
    ):
        raise InvalidRequest("invalid backup: its version settings do not fit its versions")
    if not KEY_NAME_RE.fullmatch(backup.name):
        raise InvalidRequest("invalid backup: bad key name")
    return backup


def _string(value: object) -> str:
    if not isinstance(value, str):
        raise TypeError("string")
    return value


def _version(value: object) -> int:
    """1 to 2^31-1, as a JSON integer or a string of ASCII digits (the versions map's keys)."""
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 10:
        value = int(value)
    if type(value) is not int or not 1 <= value <= MAX_VERSION:
        raise ValueError("version")
    return value


def _timestamp(value: object) -> datetime:
    moment = datetime.fromisoformat(_string(value))
    if moment.tzinfo is None:
        raise ValueError("naive time")
    return moment


def _settings(document: object, key_type: str) -> KeySettings:
    """Every field typed as KeySettings declares it, then Vault's creation rules (for_new_key) on top."""
    if not isinstance(document, dict):
        raise TypeError("settings")
    values: dict[str, Any] = {}
    for f in fields(KeySettings):
        if f.name not in document:
            continue
        value = document[f.name]
        if f.name == "custom_metadata":
            try:
                values[f.name] = checked_metadata(value)
            except KMSError:
                raise TypeError(f.name) from None
            continue
        expected = bool if isinstance(f.default, bool) else int
        if type(value) is not expected or (expected is int and not 0 <= value <= MAX_VERSION):
            raise TypeError(f.name)
        values[f.name] = value
    settings = replace(KeySettings(), **values)
    try:
        created = KeySettings.for_new_key(
            key_type,
            derived=settings.derived,
            convergent_encryption=settings.convergent_encryption,
            exportable=settings.exportable,
            allow_plaintext_backup=settings.allow_plaintext_backup,
            auto_rotate_period=settings.auto_rotate_period,
        )
    except KMSError:
        raise ValueError("settings") from None
    # A restored key is usable: soft deletion is not carried over.
    return replace(settings, derived=created.derived, soft_deleted=False)


def _material(text: str) -> KeyMaterial:
    return KeyMaterial.from_bytes(base64.b64decode(text.encode("ascii"), validate=True))
