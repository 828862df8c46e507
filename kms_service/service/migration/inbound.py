"""In: keys from Vault or OpenBao into this service (``kms-service migrate-from``), by backup, export or
byok-export, in Vault's key formats; and the services YAML for the keys moved."""

from __future__ import annotations

import asyncio
import base64
import hashlib
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from kms_service import backup as backup_format
from kms_service import vault_formats
from kms_service.byok import unwrap_byok
from kms_service.errors import KMSError
from kms_service.keyring import Key, KeySettings
from kms_service.keytypes import KEY_TYPES, KeyType
from kms_service.material import KeyMaterial, Origin
from kms_service.service.keys import KeyService
from kms_service.service.migration.client import (
    WRAPPING_KEY_PREFIX,
    VaultClient,
    error_text,
    quoted,
)
from kms_service.service.migration.remote_keys import Denied, created_times, read_exported
from kms_service.service.migration.reports import (
    CONFLICT,
    FAILED,
    IDENTICAL,
    MOVED,
    NOT_MOVABLE,
    UPDATED,
    KeyReport,
    Progress,
    Skip,
    each_key,
)

# The settings compared to decide that a key here is the same as the source's.
COMPARED_SETTINGS = tuple(n for n in KeySettings.names() if n != "soft_deleted")


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


WrappingKey = Callable[[], Awaitable[rsa.RSAPrivateKey]]


async def migrate_from(
    client: VaultClient,
    key_service: KeyService,
    mount: str,
    names: list[str],
    dry_run: bool,
    progress: Progress,
    wrapping_key: WrappingKey,
) -> list[KeyReport]:
    """Move each key in ``names`` from the source's ``mount`` into ``key_service`` (this service's mount).
    ``wrapping_key``: this service's BYOK wrapping key (for the byok-export route)."""

    async def one(name: str) -> KeyReport:
        return await _migrate_one(client, key_service, mount, name, dry_run, wrapping_key)

    return await each_key(names, one, f"reading from {client.shown}/v1/{mount}/", dry_run, progress)


async def _migrate_one(
    client: VaultClient, key_service: KeyService, mount: str, name: str, dry_run: bool, wrapping_key: WrappingKey
) -> KeyReport:
    status, data = await client.request("GET", f"{mount}/keys/{quoted(name)}")
    if status == 404:
        return KeyReport(name, NOT_MOVABLE, detail=f"no key {name} in {mount}/ on the source")
    if status != 200:
        return KeyReport(name, FAILED, detail=f"reading the key failed ({status}) {error_text(data)}".strip())
    body = data["data"]
    type_name = str(body.get("type"))
    reason = _why_not_movable(body, mount)
    if reason:
        return KeyReport(name, NOT_MOVABLE, key_type=type_name, detail=reason)
    key_type = KEY_TYPES[type_name]
    settings = _settings_from_body(body)
    latest = int(body["latest_version"])
    imported = bool(body.get("imported_key"))
    existing = await key_service.get(name, ())
    same = vault_formats.same_material
    try:
        exported = await read_exported(client, mount, name, key_type, body, imported)
        route = "backup" if settings.allow_plaintext_backup else "export"
    except Denied as denied:
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
    await key_service.restore(name, text, force=existing is not None)
    return KeyReport(name, outcome, route=route, key_type=type_name, detail="; ".join(reversed(notes)))


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
                f"for byok-export failed ({status}) {error_text(data)}"
            ).strip()
            raise Skip(KeyReport(name, NOT_MOVABLE, key_type=key_type.name, detail=detail))
    elif status != 200:
        detail = f"the token may not use {denied}, nor read the byok-export destination key ({status})"
        raise Skip(KeyReport(name, NOT_MOVABLE, key_type=key_type.name, detail=detail))
    status, data = await client.request("GET", f"{mount}/byok-export/{destination}/{quoted(name)}")
    if status != 200:
        detail = f"the token may not use {denied}; byok-export failed too ({status}) {error_text(data)}".strip()
        raise Skip(KeyReport(name, NOT_MOVABLE if status == 403 else FAILED, key_type=key_type.name, detail=detail))
    times = created_times(body)
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
            raise Skip(KeyReport(name, FAILED, key_type=key_type.name, detail=detail)) from None
        origin = Origin.IMPORTED if imported and number == latest else Origin.GENERATED
        material = replace(material, origin=origin)
        result[number] = vault_formats.SourceVersion(number, times.get(number, datetime.now(UTC)), material)
    if not result:
        raise Skip(KeyReport(name, FAILED, key_type=key_type.name, detail="byok-export returned no versions"))
    return dict(sorted(result.items()))


async def _from_backup(
    client: VaultClient,
    mount: str,
    name: str,
    key_type: KeyType,
    imported: bool,
    exported: dict[int, vault_formats.SourceVersion],
) -> list[vault_formats.SourceVersion]:
    status, data = await client.request("GET", f"{mount}/backup/{quoted(name)}")
    if status != 200:
        detail = f"backup failed ({status}) {error_text(data)}".strip()
        raise Skip(KeyReport(name, NOT_MOVABLE if status == 403 else FAILED, key_type=key_type.name, detail=detail))
    try:
        _policy, versions = vault_formats.parse_backup(data["data"]["backup"], key_type, imported)
    except vault_formats.FormatError as exc:
        raise Skip(KeyReport(name, FAILED, key_type=key_type.name, detail=str(exc))) from None
    # The backup and the export must agree on every live version (the same key, read twice).
    by_number = {v.version: v for v in versions}
    for number, v in exported.items():
        got = by_number.get(number)
        if got is None or not vault_formats.same_material(got.material, v.material):
            detail = f"the backup and the export disagree on version {number} (rotated meanwhile?); run again"
            raise Skip(KeyReport(name, FAILED, key_type=key_type.name, detail=detail))
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
