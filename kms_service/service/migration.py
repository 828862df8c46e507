"""Moving keys between a running Vault or OpenBao and this service (``kms-service migrate-from`` /
``migrate-to``).

The other server is spoken to over its HTTP API with a plain aiohttp client (``VaultClient``); keys are
written here through ``KeyService.restore``: one transaction per key, every version number, HMAC key, min
version and setting kept, so a ``vault:v<N>:`` ciphertext, signature or HMAC made there works here.

Routes in (per key, first that the key allows):

* ``backup/:name`` when the key is exportable and allows plaintext backup: every version that was not
  trimmed, also those below ``min_decryption_version``;
* ``export/encryption-key|signing-key`` and ``export/hmac-key`` when it is exportable: the live versions
  (Vault's export refuses versions below ``min_decryption_version``; the report names any left behind);
* nothing else: Vault's and OpenBao's ``byok-export`` refuse a key that is not exportable as well ("key is
  not exportable"), and carries no HMAC key, so a non-exportable key is reported, never half-moved.

Before taking a backup (which writes ``backup_info`` into the source key), the live versions are read with
``export`` and compared with what is here: a key already moved and unchanged is skipped without touching
the source again. A key here that differs from the source in a version both hold is never overwritten.

Out: ``restore`` with a backup in the destination's format when the key here allows plaintext backup
(version numbers kept), else ``keys/:name/import`` + ``import_version`` wrapped for the destination's
``wrapping_key`` (Vault numbers imported versions from 1, and makes new HMAC keys: the report says so).

Nothing here logs or prints key material or tokens.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import aiohttp
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from kms_service import backup as backup_format
from kms_service import vault_formats
from kms_service.byok import unwrap_byok, wrap_byok
from kms_service.errors import KMSError
from kms_service.keyring import Key, KeySettings
from kms_service.keytypes import KEY_TYPES, KeyType
from kms_service.material import KeyMaterial, Origin
from kms_service.service.keys import KeyService

log = logging.getLogger(__name__)

# Outcomes in a report.
MOVED = "moved"
UPDATED = "updated"
IDENTICAL = "identical"
NOT_MOVABLE = "not-movable"
CONFLICT = "conflict"
FAILED = "failed"
PROBLEMS = (NOT_MOVABLE, CONFLICT, FAILED)
# Told as each key starts and ends: (its index from 1, how many keys, what is happening, whether it ended).
Progress = Callable[[int, int, str, bool], None]

# The settings compared to decide that a key here is the same as the source's.
COMPARED_SETTINGS = tuple(n for n in KeySettings.names() if n != "soft_deleted")


# This service's wrapping key, imported into the source for byok-export: kms-service-wrapping-<fingerprint>.
WRAPPING_KEY_PREFIX = "kms-service-wrapping-"


class MigrationError(KMSError):
    """The migration cannot start (source unreachable, bad token, unknown mount): one line, no secrets."""


@dataclass
class KeyReport:
    name: str
    outcome: str
    route: str = ""
    detail: str = ""
    key_type: str = ""

    def line(self, dry_run: bool = False) -> str:
        outcome = f"would be {self.outcome}" if dry_run and self.outcome in (MOVED, UPDATED) else self.outcome
        parts = [f"{self.name}: {outcome}"]
        if self.key_type:
            parts.append(f"({self.key_type})")
        if self.route:
            parts.append(f"via {self.route}")
        text = " ".join(parts)
        return f"{text}: {self.detail}" if self.detail else text


class VaultClient:
    """Vault's HTTP API at ``addr`` with ``token``. Replies are (status, JSON body or None)."""

    def __init__(self, addr: str, token: str, timeout: float = 60) -> None:
        parts = urlsplit(addr)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise MigrationError("--addr must be an http:// or https:// URL")
        self.addr = urlunsplit((parts.scheme, parts.netloc, parts.path.rstrip("/"), "", ""))
        # For messages: the address without any user:password part.
        host = parts.hostname + (f":{parts.port}" if parts.port else "")
        self.shown = urlunsplit((parts.scheme, host, parts.path.rstrip("/"), "", ""))
        self._token = token
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> VaultClient:
        self._session = aiohttp.ClientSession(timeout=self._timeout)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()

    async def request(self, method: str, path: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
        assert self._session is not None
        url = f"{self.addr}/v1/{path}"
        try:
            async with self._session.request(
                method, url, json=body, headers={"X-Vault-Token": self._token}
            ) as response:
                text = await response.text()
                status = response.status
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise MigrationError(f"cannot reach {self.shown}: {type(exc).__name__}: {exc}".rstrip(": ")) from None
        try:
            data = json.loads(text) if text else None
        except ValueError:
            data = None
        return status, data

    async def check(self, mount: str) -> list[str]:
        """Fail with one line unless the server answers, takes the token and has ``mount``; the key names
        in the mount (OpenBao's ``import/`` wrapping-key entry left out)."""
        status, data = await self.request("GET", "sys/health")
        if status not in (200, 429, 472, 473) or not isinstance(data, dict):
            raise MigrationError(f"{self.shown} does not answer like Vault or OpenBao (sys/health: {status})")
        if data.get("sealed"):
            raise MigrationError(f"{self.shown} is sealed")
        self.flavor = "vault" if "performance_standby" in data else "openbao"
        status, _ = await self.request("GET", "auth/token/lookup-self")
        if status == 403:
            raise MigrationError(f"{self.shown} refused the token (403 permission denied): check --token")
        status, data = await self.request("LIST", f"{mount}/keys")
        errors = data.get("errors") if isinstance(data, dict) else None
        if status == 404 and errors:
            raise MigrationError(f"{self.shown} has no transit mount at {mount}/ (check --mount)")
        if status == 404:
            return []
        if status == 403:
            raise MigrationError(f"the token may not list {mount}/keys on {self.shown} (403): name keys with --key")
        if status != 200 or not isinstance(data, dict):
            raise MigrationError(f"listing {mount}/keys on {self.shown} failed ({status})")
        # Not OpenBao's "import/" wrapping-key entry, nor this service's wrapping key imported for byok-export.
        names = data["data"].get("keys", [])
        return sorted(name for name in names if "/" not in name and not name.startswith(WRAPPING_KEY_PREFIX))


def _error_text(data: Any) -> str:
    errors = data.get("errors") if isinstance(data, dict) else None
    if not errors:
        return ""
    text = str(errors[0])
    # Vault's multierror wrapping: "1 error occurred:\n\t* <msg>\n\n"
    if "\n\t* " in text:
        text = text.split("\n\t* ", 1)[1].strip()
    return text[:300]


def _q(name: str) -> str:
    return quote(name, safe="")


def _settings_from_body(body: dict[str, Any]) -> KeySettings:
    return KeySettings(
        min_decryption_version=int(body.get("min_decryption_version") or 1),
        min_encryption_version=int(body.get("min_encryption_version") or 0),
        min_available_version=int(body.get("min_available_version") or 0),
        deletion_allowed=bool(body.get("deletion_allowed")),
        exportable=bool(body.get("exportable")),
        allow_plaintext_backup=bool(body.get("allow_plaintext_backup")),
        auto_rotate_period=int(body.get("auto_rotate_period") or 0),
        derived=bool(body.get("derived")),
        convergent_encryption=bool(body.get("convergent_encryption")),
        allow_imported_key_rotation=bool(body.get("imported_key_allow_rotation")),
    )


def _why_not_movable(body: dict[str, Any], mount: str) -> str:
    type_name = body.get("type")
    if type_name not in KEY_TYPES:
        return f"key type {type_name} has no equivalent here"
    if body.get("soft_deleted"):
        return "soft-deleted on the source: restore it there (soft-delete-restore) first"
    if body.get("derived") and body.get("kdf", "hkdf_sha256") != "hkdf_sha256":
        return "derived with Vault's legacy kdf (hmac-sha256-counter), which this service does not implement"
    if body.get("convergent_encryption") and body.get("convergent_encryption_version", -1) not in (-1, 3):
        return "legacy convergent encryption (version 1 or 2), which this service does not implement"
    if not body.get("exportable"):
        return (
            "not exportable: Vault's export, backup and byok-export all refuse such a key, so its material "
            f"cannot leave the source. To move it, set exportable on the source (one-way: "
            f"POST {mount}/keys/{body.get('name', '<name>')}/config exportable=true) and run again"
        )
    return ""


def _created_times(body: dict[str, Any]) -> dict[int, datetime]:
    """Each live version's creation time from the key body (symmetric: unix seconds; asymmetric: RFC 3339)."""
    times = {}
    for number, value in (body.get("keys") or {}).items():
        try:
            if isinstance(value, int):
                times[int(number)] = datetime.fromtimestamp(value, UTC)
            elif isinstance(value, dict) and value.get("creation_time"):
                times[int(number)] = datetime.fromisoformat(value["creation_time"]).astimezone(UTC)
        except (ValueError, TypeError, OverflowError):
            continue
    return times


class _Skip(Exception):
    def __init__(self, report: KeyReport) -> None:
        self.report = report


WrappingKey = Callable[[], Awaitable[rsa.RSAPrivateKey]]


async def migrate_from(
    client: VaultClient,
    engine: KeyService,
    mount: str,
    names: list[str],
    dry_run: bool,
    progress: Progress,
    wrapping_key: WrappingKey,
) -> list[KeyReport]:
    """Move each key in ``names`` from the source's ``mount`` into ``engine`` (this service's mount).
    ``wrapping_key``: this service's BYOK wrapping key (for the byok-export route)."""

    async def one(name: str) -> KeyReport:
        return await _migrate_one(client, engine, mount, name, dry_run, wrapping_key)

    return await _each_key(names, one, f"reading from {client.shown}/v1/{mount}/", dry_run, progress)


async def _each_key(
    names: list[str],
    one: Callable[[str], Awaitable[KeyReport]],
    doing: str,
    dry_run: bool,
    progress: Progress,
) -> list[KeyReport]:
    """``one`` for each key, in order, telling ``progress`` as each starts and ends; a key's own failure is its
    report, and the run goes on (a MigrationError, the other server failing as a whole, ends it)."""
    reports = []
    for index, name in enumerate(names, 1):
        progress(index, len(names), f"{name}: {doing}", False)
        try:
            report = await one(name)
        except _Skip as skip:
            report = skip.report
        except MigrationError:
            raise
        except KMSError as exc:
            report = KeyReport(name, FAILED, detail=exc.message)
        reports.append(report)
        progress(index, len(names), report.line(dry_run), True)
    return reports


async def _migrate_one(
    client: VaultClient, engine: KeyService, mount: str, name: str, dry_run: bool, wrapping_key: WrappingKey
) -> KeyReport:
    status, data = await client.request("GET", f"{mount}/keys/{_q(name)}")
    if status == 404:
        return KeyReport(name, NOT_MOVABLE, detail=f"no key {name} in {mount}/ on the source")
    if status != 200:
        return KeyReport(name, FAILED, detail=f"reading the key failed ({status}) {_error_text(data)}".strip())
    body = data["data"]
    type_name = str(body.get("type"))
    reason = _why_not_movable(body, mount)
    if reason:
        return KeyReport(name, NOT_MOVABLE, key_type=type_name, detail=reason)
    key_type = KEY_TYPES[type_name]
    settings = _settings_from_body(body)
    latest = int(body["latest_version"])
    imported = bool(body.get("imported_key"))
    existing = await engine.get(name, ())
    same = vault_formats.same_material
    try:
        exported = await _export(client, mount, name, key_type, body, imported)
        route = "backup" if settings.allow_plaintext_backup else "export"
    except _Denied as denied:
        # The token may not export (nor back up) this key: try byok-export wrapped for this service.
        route, same = "byok-export", vault_formats.same_key
        byok = await _byok(client, mount, name, key_type, body, imported, dry_run, wrapping_key, denied.what)
        if byok is None:
            detail = "versions as listed; a run first imports this service's wrapping key into the source"
            return KeyReport(
                name, MOVED if existing is None else UPDATED, route=route, key_type=type_name, detail=detail
            )
        exported = byok
        if existing is not None:
            # BYOK carries no HMAC key: versions already here keep theirs, so a second run finds them identical.
            for number, v in list(exported.items()):
                held = existing.versions.get(number)
                if held is not None and same(held.material, v.material):
                    exported[number] = replace(v, material=replace(v.material, hmac_key=held.material.hmac_key))
    if existing is not None:
        conflict = _conflict(existing, key_type, latest, exported, same)
        if conflict:
            return KeyReport(name, CONFLICT, key_type=type_name, detail=conflict + "; nothing changed here")
        if _same(existing, settings, latest, exported):
            return KeyReport(name, IDENTICAL, key_type=type_name, detail="already here, unchanged (skipped)")
    outcome = MOVED if existing is None else UPDATED
    if route == "backup":
        if dry_run:
            versions = list(exported.values())
        else:
            versions = await _from_backup(client, mount, name, key_type, imported, exported)
    else:
        versions = list(exported.values())
    notes = []
    if existing is not None:
        for v in versions:
            held = existing.versions.get(v.version)
            if held is not None and not same(held.material, v.material):
                detail = f"version {v.version} here differs from the source's; nothing changed here"
                return KeyReport(name, CONFLICT, key_type=type_name, detail=detail)
    numbers = [v.version for v in versions]
    first_kept = max(settings.min_available_version, 1)
    if route == "byok-export":
        notes.append(
            "byok-export carries no HMAC key: new ones were made here, so HMACs made on the source do not "
            "verify here (ciphertexts and signatures do)"
        )
    if route != "backup" and numbers and numbers[0] > first_kept:
        missing = f"{first_kept}" if numbers[0] - 1 == first_kept else f"{first_kept}-{numbers[0] - 1}"
        notes.append(
            f"version(s) {missing} below min_decryption_version were not moved (export refuses them; "
            "allow_plaintext_backup on the source lets backup carry them)"
        )
    if route == "backup" and dry_run:
        notes.append("a run takes the backup, which also carries the versions below min_decryption_version")
    notes.append(f"versions {numbers[0]}-{numbers[-1]}" if len(numbers) > 1 else f"version {numbers[0]}")
    if dry_run:
        return KeyReport(name, outcome, route=route, key_type=type_name, detail="; ".join(reversed(notes)))
    text = backup_format.encode_versions(
        name,
        type_name,
        latest,
        settings,
        [backup_format.BackupVersion(v.version, v.created_at, v.material) for v in versions],
        datetime.now(UTC),
    )
    await engine.restore(name, text, force=existing is not None)
    return KeyReport(name, outcome, route=route, key_type=type_name, detail="; ".join(reversed(notes)))


async def _export(
    client: VaultClient, mount: str, name: str, key_type: KeyType, body: dict[str, Any], imported: bool
) -> dict[int, vault_formats.SourceVersion]:
    """The live versions, read with export (no side effect on the source)."""
    hmac_keys = await _export_type(client, mount, name, "hmac-key")
    keys: dict[str, str] | None = None
    if key_type.name != "hmac":
        export_type = "signing-key" if key_type.supports_signing else "encryption-key"
        keys = await _export_type(client, mount, name, export_type)
    times = _created_times(body)
    latest = int(body["latest_version"])
    result = {}
    for number_text, hmac_text in hmac_keys.items():
        number = int(number_text)
        key_text = None if keys is None else keys.get(number_text)
        if keys is not None and not key_text:
            raise _Skip(
                KeyReport(
                    name,
                    NOT_MOVABLE,
                    key_type=key_type.name,
                    detail=f"version {number} has no private key on the source (a public-key-only import)",
                )
            )
        try:
            material = vault_formats.material_from_export(key_type, key_text, hmac_text, imported and number == latest)
        except vault_formats.FormatError as exc:
            raise _Skip(KeyReport(name, FAILED, key_type=key_type.name, detail=str(exc))) from None
        result[number] = vault_formats.SourceVersion(number, times.get(number, datetime.now(UTC)), material)
    if not result:
        raise _Skip(KeyReport(name, FAILED, key_type=key_type.name, detail="export returned no versions"))
    return dict(sorted(result.items()))


class _Denied(Exception):
    def __init__(self, what: str) -> None:
        self.what = what


async def _export_type(client: VaultClient, mount: str, name: str, export_type: str) -> dict[str, str]:
    status, data = await client.request("GET", f"{mount}/export/{export_type}/{_q(name)}")
    if status == 403:
        raise _Denied(f"export/{export_type}")
    if status != 200:
        detail = f"export/{export_type} failed ({status}) {_error_text(data)}".strip()
        raise _Skip(KeyReport(name, NOT_MOVABLE if status == 403 else FAILED, detail=detail))
    return dict(data["data"]["keys"])


async def _byok(
    client: VaultClient,
    mount: str,
    name: str,
    key_type: KeyType,
    body: dict[str, Any],
    imported: bool,
    dry_run: bool,
    wrapping_key: WrappingKey,
    denied: str,
) -> dict[int, vault_formats.SourceVersion] | None:
    """The live versions through ``byok-export/<destination>/<name>``: the destination is this service's
    wrapping key, imported into the source as a public-key-only RSA key (named after its fingerprint, made
    once, reused). None in a dry run that would have to create it."""
    private = await wrapping_key()
    public_pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    destination = WRAPPING_KEY_PREFIX + hashlib.sha256(public_pem).hexdigest()[:16]
    status, data = await client.request("GET", f"{mount}/keys/{destination}")
    if status == 404:
        if dry_run:
            return None
        status, data = await client.request(
            "POST",
            f"{mount}/keys/{destination}/import",
            {"public_key": public_pem.decode("ascii"), "type": f"rsa-{private.key_size}"},
        )
        if status not in (200, 204):
            detail = (
                f"the token may not use {denied}, and importing this service's wrapping key into the source "
                f"for byok-export failed ({status}) {_error_text(data)}"
            ).strip()
            raise _Skip(KeyReport(name, NOT_MOVABLE, key_type=key_type.name, detail=detail))
    elif status != 200:
        detail = f"the token may not use {denied}, nor read the byok-export destination key ({status})"
        raise _Skip(KeyReport(name, NOT_MOVABLE, key_type=key_type.name, detail=detail))
    status, data = await client.request("GET", f"{mount}/byok-export/{destination}/{_q(name)}")
    if status != 200:
        detail = f"the token may not use {denied}; byok-export failed too ({status}) {_error_text(data)}".strip()
        raise _Skip(KeyReport(name, NOT_MOVABLE if status == 403 else FAILED, key_type=key_type.name, detail=detail))
    times = _created_times(body)
    latest = int(body["latest_version"])
    result = {}
    for number_text, blob in data["data"]["keys"].items():
        number = int(number_text)
        try:
            raw = await asyncio.to_thread(unwrap_byok, private, base64.b64decode(blob, validate=True))
            material = key_type.import_key(raw)
        except (KMSError, ValueError) as exc:
            detail = (
                f"version {number} did not unwrap as {key_type.name} ({getattr(exc, 'message', type(exc).__name__)})"
            )
            raise _Skip(KeyReport(name, FAILED, key_type=key_type.name, detail=detail)) from None
        origin = Origin.IMPORTED if imported and number == latest else Origin.GENERATED
        material = replace(material, origin=origin)
        result[number] = vault_formats.SourceVersion(number, times.get(number, datetime.now(UTC)), material)
    if not result:
        raise _Skip(KeyReport(name, FAILED, key_type=key_type.name, detail="byok-export returned no versions"))
    return dict(sorted(result.items()))


async def _from_backup(
    client: VaultClient,
    mount: str,
    name: str,
    key_type: KeyType,
    imported: bool,
    exported: dict[int, vault_formats.SourceVersion],
) -> list[vault_formats.SourceVersion]:
    status, data = await client.request("GET", f"{mount}/backup/{_q(name)}")
    if status != 200:
        detail = f"backup failed ({status}) {_error_text(data)}".strip()
        raise _Skip(KeyReport(name, NOT_MOVABLE if status == 403 else FAILED, key_type=key_type.name, detail=detail))
    try:
        _policy, versions = vault_formats.parse_backup(data["data"]["backup"], key_type, imported)
    except vault_formats.FormatError as exc:
        raise _Skip(KeyReport(name, FAILED, key_type=key_type.name, detail=str(exc))) from None
    # The backup and the export must agree on every live version (the same key, read twice).
    by_number = {v.version: v for v in versions}
    for number, v in exported.items():
        got = by_number.get(number)
        if got is None or not vault_formats.same_material(got.material, v.material):
            detail = f"the backup and the export disagree on version {number} (rotated meanwhile?); run again"
            raise _Skip(KeyReport(name, FAILED, key_type=key_type.name, detail=detail))
    return versions


def _conflict(
    existing: Key,
    key_type: KeyType,
    latest: int,
    exported: dict[int, vault_formats.SourceVersion],
    same: Callable[[KeyMaterial, KeyMaterial], bool] = vault_formats.same_material,
) -> str:
    if existing.key_type.name != key_type.name:
        return f"a {existing.key_type.name} key of that name exists here"
    if existing.latest_version > latest:
        return f"the key here has newer versions ({existing.latest_version}) than the source ({latest})"
    for number, v in exported.items():
        held = existing.versions.get(number)
        if held is not None and not same(held.material, v.material):
            return f"version {number} here differs from the source's"
    return ""


def _same(existing: Key, settings: KeySettings, latest: int, exported: dict[int, vault_formats.SourceVersion]) -> bool:
    if existing.latest_version != latest or any(n not in existing.versions for n in exported):
        return False
    return all(getattr(existing.settings, n) == getattr(settings, n) for n in COMPARED_SETTINGS)


# -- the services YAML ------------------------------------------------------------------------------------------

# Grant type → (key type, policies): the services YAML grants what its two grant types allow.
YAML_GRANTS = {
    "ecdsa-p256": ("sign", ("admin", "sign", "verify")),
    "chacha20-poly1305": ("encrypt", ("admin", "encrypt", "decrypt", "rewrap")),
}


def services_yaml(names: list[tuple[str, str]], service_name: str = "vault-kms") -> str:
    """A services YAML with one endpoint per key (named after it) granting what its type allows. ``names``:
    (key, key type) of keys in transit/. The YAML's grant types make ecdsa-p256 (sign) or chacha20-poly1305
    (encrypt) keys; other keys are listed as comments (grant them with an ACL policy document)."""
    lines = [f"{service_name}:", "    type: vault-kms:1.12", "    configuration:", "        endpoints:"]
    others = []
    for key, key_type in names:
        grant = YAML_GRANTS.get(key_type)
        if grant is None:
            others.append(f"{key} ({key_type})")
            continue
        grant_type, policies = grant
        lines.append(f"            {_endpoint_id(key)}:")
        for policy in policies:
            lines.append(f"                - policy: {policy}")
            lines += [f"                  key: {key}", f"                  type: {grant_type}"]
    comments = []
    if others:
        comments = [
            "# The services YAML's grant types make only ecdsa-p256 (sign) and chacha20-poly1305 (encrypt) keys;",
            "# grant these with an ACL policy document ('kms-service policy write'):",
            *(f"#   {other}" for other in others),
        ]
    if len(lines) == 4:
        return "\n".join([*comments, "# no key here can be granted in the services YAML"])
    return "\n".join([*comments, *lines])


def _endpoint_id(key: str) -> str:
    return "".join(c if c.isalnum() or c in "_-." else "_" for c in key)


# -- out: this service → Vault / OpenBao ----------------------------------------------------------------------


async def migrate_to(
    client: VaultClient,
    engine: KeyService,
    mount: str,
    names: list[str],
    dry_run: bool,
    progress: Progress,
) -> list[KeyReport]:

    async def one(name: str) -> KeyReport:
        return await _push_one(client, engine, mount, name, dry_run)

    return await _each_key(names, one, f"writing to {client.shown}/v1/{mount}/", dry_run, progress)


async def _push_one(client: VaultClient, engine: KeyService, mount: str, name: str, dry_run: bool) -> KeyReport:
    key = await engine.get(name, ())
    if key is None:
        return KeyReport(name, NOT_MOVABLE, detail="no such key here")
    type_name = key.key_type.name
    s = key.settings
    if not s.exportable:
        return KeyReport(
            name, NOT_MOVABLE, key_type=type_name, detail="not exportable here; set exportable (one-way) to move it"
        )
    if type_name not in vault_formats.TYPE_NUMBERS[client.flavor]:
        return KeyReport(name, NOT_MOVABLE, key_type=type_name, detail=f"{client.flavor} has no key type {type_name}")
    status, data = await client.request("GET", f"{mount}/keys/{_q(name)}")
    if status == 200:
        return await _compare_remote(client, mount, key, data["data"], dry_run)
    if status != 404:
        return KeyReport(name, FAILED, key_type=type_name, detail=f"reading the destination key failed ({status})")
    if s.allow_plaintext_backup:
        route = "restore"
        detail = f"{_span(min(key.versions), key.latest_version)}, numbers and HMAC keys kept"
        if not dry_run:
            text = vault_formats.encode_backup(key, client.flavor)
            status, data = await client.request("POST", f"{mount}/restore/{_q(name)}", {"backup": text})
            if status not in (200, 204):
                return KeyReport(
                    name,
                    FAILED,
                    route=route,
                    key_type=type_name,
                    detail=f"restore failed ({status}) {_error_text(data)}",
                )
        return KeyReport(name, MOVED, route=route, key_type=type_name, detail=detail)
    return await _push_import(client, mount, key, dry_run)


async def _push_import(client: VaultClient, mount: str, key: Key, dry_run: bool) -> KeyReport:
    name, type_name, s = key.name, key.key_type.name, key.settings
    route = "import"
    if s.convergent_encryption:
        detail = "convergent keys cannot be imported into Vault; allow_plaintext_backup here lets restore move it"
        return KeyReport(name, NOT_MOVABLE, route=route, key_type=type_name, detail=detail)
    live = [key.versions[n] for n in sorted(key.versions) if n >= s.min_decryption_version]
    if any(not kv.material.has_private_key for kv in live):
        detail = "a version has no private key (public-key-only import); allow_plaintext_backup lets restore move it"
        return KeyReport(name, NOT_MOVABLE, route=route, key_type=type_name, detail=detail)
    first = live[0].version
    shift = first - 1
    notes = [
        f"{_span(first, key.latest_version)} are {_span(1, key.latest_version - shift)} there"
        if shift
        else f"{_span(1, key.latest_version)}, numbers kept"
    ]
    if type_name != "hmac":  # (an hmac key's HMAC key is the key itself, which import carries)
        notes.append("Vault's import makes new HMAC keys: HMACs made here do not verify there")
    if first > 1:
        notes.insert(1, "ciphertexts and signatures of those versions must be rewrapped/re-signed (numbers moved)")
    if dry_run:
        return KeyReport(name, MOVED, route=route, key_type=type_name, detail="; ".join(notes))
    status, data = await client.request("GET", f"{mount}/wrapping_key")
    if status != 200:
        return KeyReport(name, FAILED, route=route, key_type=type_name, detail=f"wrapping_key failed ({status})")
    wrapping = serialization.load_pem_public_key(data["data"]["public_key"].encode("ascii"))
    for index, kv in enumerate(live):
        blob = await asyncio.to_thread(wrap_byok, wrapping, vault_formats.byok_target(key.key_type, kv.material))
        if index == 0:
            path = f"{mount}/keys/{_q(name)}/import"
            body: dict[str, Any] = {
                "ciphertext": blob,
                "type": type_name,
                "derived": s.derived,
                "exportable": s.exportable,
                "allow_plaintext_backup": s.allow_plaintext_backup,
                "allow_rotation": True,
                "auto_rotate_period": s.auto_rotate_period,
            }
        else:
            path, body = f"{mount}/keys/{_q(name)}/import_version", {"ciphertext": blob}
        status, data = await client.request("POST", path, body)
        if status not in (200, 204):
            detail = f"{path.rsplit('/', 1)[1]} of version {kv.version} failed ({status}) {_error_text(data)}"
            return KeyReport(name, FAILED, route=route, key_type=type_name, detail=detail)
    config = {
        "min_decryption_version": 1,
        "min_encryption_version": max(s.min_encryption_version - shift, 0) if s.min_encryption_version else 0,
        "deletion_allowed": s.deletion_allowed,
    }
    status, data = await client.request("POST", f"{mount}/keys/{_q(name)}/config", config)
    if status not in (200, 204):
        notes.append(f"setting min versions there failed ({status}) {_error_text(data)}")
    return KeyReport(name, MOVED, route=route, key_type=type_name, detail="; ".join(notes))


REMOTE_SETTINGS = (
    "min_decryption_version",
    "min_encryption_version",
    "min_available_version",
    "deletion_allowed",
    "exportable",
    "allow_plaintext_backup",
    "auto_rotate_period",
)


async def _compare_remote(client: VaultClient, mount: str, key: Key, body: dict[str, Any], dry_run: bool) -> KeyReport:
    """The destination already has a key of this name: identical (skip); the same key with fewer versions or
    other settings (moved there before, then rotated or configured here: the way back after a cut-over),
    restored over with ``force`` when the key allows plaintext backup; else a conflict (left alone)."""
    name, type_name = key.name, key.key_type.name
    if body.get("type") != type_name:
        return KeyReport(name, CONFLICT, key_type=type_name, detail=f"a {body.get('type')} key of that name is there")
    if not body.get("exportable"):
        return KeyReport(name, CONFLICT, key_type=type_name, detail="a key of that name is there (not exportable)")
    try:
        exported = await _export(client, mount, name, key.key_type, body, bool(body.get("imported_key")))
    except _Skip as skip:
        return replace(skip.report, outcome=CONFLICT, detail=f"a key of that name is there; {skip.report.detail}")
    except _Denied as denied:
        detail = f"a key of that name is there; the token may not use {denied.what} to compare it"
        return KeyReport(name, CONFLICT, key_type=type_name, detail=detail)
    # Restored keys keep numbers and HMAC keys; imported ones are numbered from 1 with new HMAC keys.
    ours = [kv for n, kv in sorted(key.versions.items()) if n >= key.settings.min_decryption_version]
    same_numbers = all(
        n in key.versions and vault_formats.same_material(key.versions[n].material, v.material)
        for n, v in exported.items()
    )
    same_keys = len(ours) == len(exported) and all(
        kv.material.key == v.material.key for kv, v in zip(ours, exported.values(), strict=True)
    )
    remote_latest = int(body["latest_version"])
    same_settings = all(body.get(f) == getattr(key.settings, f) for f in REMOTE_SETTINGS)
    if (same_numbers and remote_latest == key.latest_version and same_settings) or same_keys:
        return KeyReport(name, IDENTICAL, key_type=type_name, detail="already there, unchanged (skipped)")
    if same_numbers and remote_latest <= key.latest_version and key.settings.allow_plaintext_backup:
        detail = f"{_span(min(key.versions), key.latest_version)} (was {remote_latest} there), numbers kept"
        if not dry_run:
            text = vault_formats.encode_backup(key, client.flavor)
            path = f"{mount}/restore/{_q(name)}"
            status, data = await client.request("POST", path, {"backup": text, "force": True})
            if status not in (200, 204):
                detail = f"restore failed ({status}) {_error_text(data)}".strip()
                return KeyReport(name, FAILED, route="restore", key_type=type_name, detail=detail)
        return KeyReport(name, UPDATED, route="restore", key_type=type_name, detail=detail)
    return KeyReport(name, CONFLICT, key_type=type_name, detail="a different key of that name is there; left alone")


def _span(first: int, last: int) -> str:
    return f"version {first}" if first == last else f"versions {first}-{last}"


def summary(reports: list[KeyReport], dry_run: bool) -> str:
    counts: dict[str, int] = {}
    for report in reports:
        counts[report.outcome] = counts.get(report.outcome, 0) + 1
    if not reports:
        return "no keys to move"
    parts = [f"{counts[o]} {o}" for o in (MOVED, UPDATED, IDENTICAL, NOT_MOVABLE, CONFLICT, FAILED) if counts.get(o)]
    changed = counts.get(MOVED, 0) + counts.get(UPDATED, 0)
    if dry_run:
        tail = "dry run: nothing was changed"
    elif changed == 0:
        tail = "nothing changed"
    else:
        tail = f"{changed} key(s) written"
    return f"{len(reports)} key(s): {', '.join(parts)} ({tail})"
