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
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any

from kms_service.errors import InvalidRequest
from kms_service.keyring import KEY_NAME_RE, Key, KeySettings
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
    settings = {f.name: getattr(key.settings, f.name) for f in fields(KeySettings)}
    settings["soft_deleted"] = False  # a restored key is usable
    document: dict[str, Any] = {
        "format": FORMAT,
        "name": key.name,
        "type": key.key_type.name,
        "latest_version": key.latest_version,
        "settings": settings,
        "backup_time": taken_at.isoformat(),
        "versions": {
            str(number): {
                "created_at": kv.created_at.isoformat(),
                "material": base64.b64encode(kv.material.to_bytes()).decode("ascii"),
            }
            for number, kv in sorted(key.versions.items())
        },
    }
    return base64.b64encode(json.dumps(document, sort_keys=True).encode()).decode("ascii")


def decode(text: str) -> Backup:
    """Parse a backup; any defect is one 400 that says nothing of the contents."""
    try:
        document = json.loads(base64.b64decode(text.encode("ascii"), validate=True))
        if not isinstance(document, dict) or document.get("format") != FORMAT:
            raise ValueError("format")
        known = {f.name for f in fields(KeySettings)}
        settings = KeySettings(**{k: v for k, v in document["settings"].items() if k in known})
        versions = tuple(
            BackupVersion(int(number), datetime.fromisoformat(entry["created_at"]), _material(entry["material"]))
            for number, entry in sorted(document["versions"].items(), key=lambda item: int(item[0]))
        )
        backup = Backup(
            name=str(document["name"]),
            key_type=str(document["type"]),
            latest_version=int(document["latest_version"]),
            settings=settings,
            versions=versions,
        )
    except (ValueError, KeyError, TypeError, AttributeError, binascii.Error, UnicodeError, json.JSONDecodeError):
        raise InvalidRequest("invalid backup: not a kms-service key backup") from None
    numbers = [v.version for v in backup.versions]
    if not numbers or numbers[-1] != backup.latest_version or any(n < 1 for n in numbers):
        raise InvalidRequest("invalid backup: its versions do not match its latest version")
    if not KEY_NAME_RE.fullmatch(backup.name):
        raise InvalidRequest("invalid backup: bad key name")
    return backup


def _material(text: str) -> KeyMaterial:
    return KeyMaterial.from_bytes(base64.b64decode(text.encode("ascii"), validate=True))
