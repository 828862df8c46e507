"""Out: keys from this service into Vault or OpenBao (``kms-service migrate-to``), by restore or import."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

from cryptography.hazmat.primitives import serialization

from kms_service import vault_formats
from kms_service.byok import wrap_byok
from kms_service.keyring import Key
from kms_service.service.keys import KeyService
from kms_service.service.migration.client import (
    VaultClient,
    error_text,
    quoted,
)
from kms_service.service.migration.remote_keys import Denied, read_exported
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
    span,
)


async def migrate_to(
    client: VaultClient,
    key_service: KeyService,
    mount: str,
    names: list[str],
    dry_run: bool,
    progress: Progress,
) -> list[KeyReport]:

    async def one(name: str) -> KeyReport:
        return await _push_one(client, key_service, mount, name, dry_run)

    return await each_key(names, one, f"writing to {client.shown}/v1/{mount}/", dry_run, progress)


async def _push_one(client: VaultClient, key_service: KeyService, mount: str, name: str, dry_run: bool) -> KeyReport:
    key = await key_service.get(name, ())
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
    status, data = await client.request("GET", f"{mount}/keys/{quoted(name)}")
    if status == 200:
        return await _compare_remote(client, mount, key, data["data"], dry_run)
    if status != 404:
        return KeyReport(name, FAILED, key_type=type_name, detail=f"reading the destination key failed ({status})")
    if s.allow_plaintext_backup:
        route = "restore"
        detail = f"{span(min(key.versions), key.latest_version)}, numbers and HMAC keys kept"
        if not dry_run:
            text = vault_formats.encode_backup(key, client.flavor)
            status, data = await client.request("POST", f"{mount}/restore/{quoted(name)}", {"backup": text})
            if status not in (200, 204):
                return KeyReport(
                    name,
                    FAILED,
                    route=route,
                    key_type=type_name,
                    detail=f"restore failed ({status}) {error_text(data)}",
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
        f"{span(first, key.latest_version)} are {span(1, key.latest_version - shift)} there"
        if shift
        else f"{span(1, key.latest_version)}, numbers kept"
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
            path = f"{mount}/keys/{quoted(name)}/import"
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
            path, body = f"{mount}/keys/{quoted(name)}/import_version", {"ciphertext": blob}
        status, data = await client.request("POST", path, body)
        if status not in (200, 204):
            detail = f"{path.rsplit('/', 1)[1]} of version {kv.version} failed ({status}) {error_text(data)}"
            return KeyReport(name, FAILED, route=route, key_type=type_name, detail=detail)
    config = {
        "min_decryption_version": 1,
        "min_encryption_version": max(s.min_encryption_version - shift, 0) if s.min_encryption_version else 0,
        "deletion_allowed": s.deletion_allowed,
    }
    status, data = await client.request("POST", f"{mount}/keys/{quoted(name)}/config", config)
    if status not in (200, 204):
        notes.append(f"setting min versions there failed ({status}) {error_text(data)}")
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
        exported = await read_exported(client, mount, name, key.key_type, body, bool(body.get("imported_key")))
    except Skip as skip:
        return replace(skip.report, outcome=CONFLICT, detail=f"a key of that name is there; {skip.report.detail}")
    except Denied as denied:
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
        detail = f"{span(min(key.versions), key.latest_version)} (was {remote_latest} there), numbers kept"
        if not dry_run:
            text = vault_formats.encode_backup(key, client.flavor)
            path = f"{mount}/restore/{quoted(name)}"
            status, data = await client.request("POST", path, {"backup": text, "force": True})
            if status not in (200, 204):
                detail = f"restore failed ({status}) {error_text(data)}".strip()
                return KeyReport(name, FAILED, route="restore", key_type=type_name, detail=detail)
        return KeyReport(name, UPDATED, route="restore", key_type=type_name, detail=detail)
    return KeyReport(name, CONFLICT, key_type=type_name, detail="a different key of that name is there; left alone")
