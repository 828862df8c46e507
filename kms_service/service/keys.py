"""Keys of one transit mount: every key write, as one transaction holding the key's row lock, on top of the
cache and reads of ``key_reads.KeyReads``. ``MountService`` makes one ``KeyService`` per mount.

Slow work never runs on the event loop nor under a lock: new material is generated in a worker thread
before the transaction starts, and crypto objects are built in a worker thread after it ends, lazily, for
the versions a request actually uses.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Iterable
from dataclasses import replace
from datetime import datetime
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from kms_service import backup as backup_format
from kms_service import certificates
from kms_service.errors import InternalError, InvalidRequest, RefusedAsServerError, SealError
from kms_service.keyring import MAX_VERSION, Key, KeyConfigChange, KeySettings
from kms_service.keytypes import KeyType, public_key_pem
from kms_service.material import ENVELOPE_FORMAT, KeyMaterial
from kms_service.mounts import key_ref
from kms_service.seal import key_material_aad
from kms_service.service.invalidation import Change, Kind
from kms_service.service.key_reads import MOUNT_SETTING_DEFAULTS, SOFT_DELETED, KeyReads, utcnow
from kms_service.storage import repository as repo

log = logging.getLogger(__name__)

# keys.source: where a key was made.
SOURCE_CONFIG = "services-yaml"
SOURCE_API = "api"


class KeyService(KeyReads):
    """A mount's keys: the reads and the cache (``KeyReads``), and every write."""

    async def set_mount_settings(self, **values: Any) -> dict[str, Any]:
        async with self._db.writing() as session:
            for name, value in values.items():
                if name not in MOUNT_SETTING_DEFAULTS:
                    raise InternalError(f"unknown engine setting {name}")
                await repo.put_mount_setting(session, self.mount.id, name, json.dumps(value), utcnow())
        return await self.mount_settings()

    async def generate(self, key_type: str, key_size: int | None = None) -> KeyMaterial:
        """New material for a version, made in a worker thread (RSA key generation takes seconds).
        ``key_size``: hmac keys only (bytes); None for the type's default."""
        return await asyncio.to_thread(self._key_type(key_type, "?").generate, key_size or None)

    async def create(
        self,
        session: AsyncSession,
        name: str,
        key_type: str,
        material: KeyMaterial,
        settings: KeySettings,
        source: str = SOURCE_CONFIG,
    ) -> int:
        """Insert a new key with its first version, inside the caller's transaction."""
        now = utcnow()
        first = self._seal(name, 1, material, now)
        row = await repo.create_key(
            session, self.mount.id, name, key_type, now, first, _public_pem(material), settings, source
        )
        self._db.changed(session, self._changed(name))
        log.info("created key %s (%s)", self._ref(name), key_type)
        return row.id

    async def create_with_versions(
        self,
        session: AsyncSession,
        name: str,
        key_type: str,
        materials: list[KeyMaterial],
        settings: KeySettings,
        source: str = SOURCE_API,
    ) -> int:
        """Insert a new key with versions 1..len(materials), inside the caller's transaction: a long-used
        key's shape, written without one transaction per version (bench/scale_bench.py loads thousands)."""
        now = utcnow()
        first = materials[0]
        row = await repo.create_key(
            session,
            self.mount.id,
            name,
            key_type,
            now,
            self._seal(name, 1, first, now),
            _public_pem(first),
            settings,
            source,
        )
        for version, material in enumerate(materials[1:], start=2):
            await repo.add_version(session, row, self._seal(name, version, material, now), _public_pem(material))
        if len(materials) > 1:
            latest = len(materials)
            await repo.bump(session, row, now, latest_version=latest, **_retention_floors(row, latest))
        self._db.changed(session, self._changed(name))
        return row.id

    async def rotate(self, name: str, only_if_due: bool = False, only_if_latest: int = 0) -> Key | None:
        """Add a version. Committed before this returns; concurrent rotations (any node) serialize on the
        key row, so versions stay contiguous. Returns the key as this rotation left it. ``only_if_due``
        (auto-rotation): rotate only if the period has still passed under the lock, else return None;
        ``only_if_latest`` (the nonce budget): only if that version is still the latest."""
        current = await self.get(name, ())
        if current is None:
            raise InvalidRequest("key not found")
        if current.imported and not current.settings.allow_imported_key_rotation:
            raise RefusedAsServerError(f"imported key {name} does not allow rotation within Vault")
        # A key's type never changes, so material made before the lock stays right; hmac keys keep their size.
        material = await self.generate(current.key_type.name, current.key_size or None)
        async with self._db.writing() as session:
            row = await repo.get_key(session, self.mount.id, name, for_update=True)
            if row is None:
                raise InvalidRequest("key not found")
            _refuse_soft_deleted(row)
            if only_if_latest and row.latest_version != only_if_latest:
                return None
            if row.latest_version >= MAX_VERSION:
                raise InvalidRequest(f"key {name} has reached the highest version number ({MAX_VERSION})")
            now = utcnow()
            if only_if_due and not repo.key_settings(row).auto_rotation_due(
                await repo.latest_version_created_at(session, row), now
            ):
                return None
            version = self._seal(name, row.latest_version + 1, material, now)
            await repo.add_version(session, row, version, _public_pem(material))
            # Version retention: the versions past the newest retain_versions stop decrypting now.
            await repo.bump(
                session, row, now, latest_version=version.version, **_retention_floors(row, version.version)
            )
            self._db.changed(session, self._changed(name))
            stored = await repo.load_key(session, self.mount.id, name)
        log.info("rotated key %s to version %d", self._ref(name), version.version)
        return await self._remember(stored)

    async def upsert(self, name: str, key_type: str, settings: KeySettings, key_size: int = 0) -> Key:
        """Vault's key create: make the key if it does not exist; an existing key is returned unchanged (the
        new parameters are ignored, as in Vault). Two nodes creating the same name at once make one key."""
        existing = await self.get(name, ())
        if existing is not None:
            return existing
        material = await self.generate(key_type, key_size)
        try:
            async with self._db.writing() as session:
                if await repo.get_key(session, self.mount.id, name, for_update=True) is None:
                    await self.create(session, name, key_type, material, settings, source=SOURCE_API)
        except IntegrityError:
            pass  # another node made it first (theirs stands), or the mount was disabled meanwhile
        key = await self._reload(name)
        if key is None:
            async with self._db.reading() as session:
                if await repo.get_mount(session, self.mount.path) is None:
                    raise InvalidRequest(f"No secret engine mount at {self.mount.path}/")
            raise InternalError(f"key {name} vanished while it was being created")
        return key

    async def delete(self, name: str) -> None:
        async with self._db.writing() as session:
            row = await repo.get_key(session, self.mount.id, name, for_update=True)
            if row is None:
                raise InvalidRequest(f"error deleting policy {name}: could not delete key; not found")
            if not repo.key_settings(row).deletion_allowed:
                raise InvalidRequest(f"error deleting policy {name}: deletion is not allowed for this key")
            await repo.delete_key(session, row)
            self._db.changed(session, self._changed(name), Change(Kind.POLICY))
        log.info("deleted key %s", self._ref(name))

    async def trim(self, name: str, min_available_version: int) -> Key:
        """Delete every version below ``min_available_version`` for good (Vault's trim)."""
        async with self._db.writing() as session:
            row = await repo.get_key(session, self.mount.id, name, for_update=True)
            if row is None:
                raise InvalidRequest("invalid key name")
            _refuse_soft_deleted(row)
            settings = repo.key_settings(row).trimmed(min_available_version)
            await repo.delete_versions_below(session, row, min_available_version)
            await repo.save_settings(session, row, settings, utcnow())
            self._db.changed(session, self._changed(name))
            stored = await repo.load_key(session, self.mount.id, name)
        log.info("trimmed key %s below version %d", self._ref(name), min_available_version)
        return await self._remember(stored)

    async def rotate_due(self, candidates: Iterable[repo.RotationCandidate], now: datetime | None = None) -> list[str]:
        """Rotate each candidate (a key of this mount with an auto_rotate_period) whose period has passed
        since its latest version. Each rotation is its own transaction and re-checks under the row lock, so
        nodes sweeping at once rotate a key once; one failing key does not stop the sweep."""
        rotated = []
        for candidate in candidates:
            settings = KeySettings(auto_rotate_period=candidate.auto_rotate_period)
            if not settings.auto_rotation_due(candidate.latest_created_at, now or utcnow()):
                continue
            try:
                if await self.rotate(candidate.name, only_if_due=True) is not None:
                    rotated.append(candidate.name)
            except Exception:
                log.exception("auto-rotation of key %s failed; the sweep goes on", self._ref(candidate.name))
        return rotated

    async def set_soft_deleted(self, name: str, soft_deleted: bool) -> tuple[Key, list[str]]:
        """OpenBao's soft delete and its restore: the key stays, but every use is refused meanwhile."""
        warnings = []
        async with self._db.writing() as session:
            row = await repo.get_key(session, self.mount.id, name, for_update=True)
            if row is None:
                raise InvalidRequest(f"no existing key named {name} could be found")
            settings = repo.key_settings(row)
            if settings.soft_deleted == soft_deleted:
                warnings.append("key is already soft-deleted" if soft_deleted else "key is not soft-deleted")
            elif await repo.save_settings(session, row, replace(settings, soft_deleted=soft_deleted), utcnow()):
                self._db.changed(session, self._changed(name))
            stored = await repo.load_key(session, self.mount.id, name)
        return await self._remember(stored), warnings

    async def set_certificate_chain(self, name: str, version: int, chain_pem: str) -> Key:
        """Store a certificate chain with one version of a signing key (its leaf must certify that version)."""
        async with self._db.writing() as session:
            row = await repo.get_key(session, self.mount.id, name, for_update=True)
            if row is None:
                raise InvalidRequest(f"no existing key named {name} could be found")
            _refuse_soft_deleted(row)
            number = version or row.latest_version
            stored = await repo.get_version(session, row, number)
            if stored is None or number < row.min_decryption_version:
                raise InvalidRequest("version does not exist or cannot be found")
            material = self._unseal(self._ref(name), stored)
            if material.public_key is None:
                raise InvalidRequest(f"key type {row.type} does not support certificates")
            chain = certificates.checked_chain(chain_pem, material.public_key)
            updated = replace(material, extra={**material.extra, "certificate_chain": chain})
            resealed = self._seal(name, number, updated, stored.created_at)
            await repo.reseal_version(
                session, row.id, number, resealed.sealed_material, ENVELOPE_FORMAT, self._master_key.key_id
            )
            await repo.bump(session, row, utcnow())
            self._db.changed(session, self._changed(name))
            reloaded = await repo.load_key(session, self.mount.id, name)
        return await self._remember(reloaded)

    async def import_key(self, name: str, key_type: str, material: KeyMaterial, settings: KeySettings) -> None:
        """A new key whose first version is imported material (Vault's keys/:name/import)."""
        _refuse_weak(self._key_type(key_type, name), material)
        try:
            async with self._db.writing() as session:
                if await repo.get_key(session, self.mount.id, name, for_update=True) is not None:
                    raise RefusedAsServerError(
                        "the import path cannot be used with an existing key; use import-version to rotate an "
                        "existing imported key"
                    )
                await self.create(session, name, key_type, material, settings, source=SOURCE_API)
        except IntegrityError:
            raise RefusedAsServerError(
                "the import path cannot be used with an existing key; use import-version to rotate an existing "
                "imported key"
            ) from None
        log.info("imported key %s (%s)", self._ref(name), key_type)

    async def import_version(self, name: str, make: Callable[[KeyType], KeyMaterial], version: int = 0) -> Key:
        """Add an imported version to an imported key, or (``version``) complete a public-key-only version with
        its private key. ``make`` turns the request into material for the key's type."""
        current = await self.get(name, ())
        if current is None:
            raise RefusedAsServerError(f"no key found with name {name}; to import a new key, use the import/ endpoint")
        if not current.imported:
            raise RefusedAsServerError("the import_version endpoint can only be used with an imported key")
        material = make(current.key_type)
        _refuse_weak(current.key_type, material)
        async with self._db.writing() as session:
            row = await repo.get_key(session, self.mount.id, name, for_update=True)
            if row is None:
                raise RefusedAsServerError(f"no key found with name {name}")
            _refuse_soft_deleted(row)
            now = utcnow()
            if version:
                stored = await repo.get_version(session, row, version)
                if stored is None:
                    raise InvalidRequest("version does not exist or cannot be found")
                existing = self._unseal(self._ref(name), stored)
                if existing.has_private_key or existing.public_key != material.public_key:
                    raise RefusedAsServerError(
                        "cannot import a private key that does not match the version's public key"
                    )
                sealed = self._seal(name, version, material, stored.created_at)
                await repo.reseal_version(
                    session, row.id, version, sealed.sealed_material, ENVELOPE_FORMAT, sealed.master_key_id
                )
                await repo.bump(session, row, now)
            else:
                added = self._seal(name, row.latest_version + 1, material, now)
                await repo.add_version(session, row, added, _public_pem(material))
                await repo.bump(
                    session, row, now, latest_version=added.version, **_retention_floors(row, added.version)
                )
            self._db.changed(session, self._changed(name))
            stored_key = await repo.load_key(session, self.mount.id, name)
        log.info("imported a version of key %s", self._ref(name))
        return await self._remember(stored_key)

    async def restore(self, name: str | None, text: str, force: bool) -> None:
        """Restore a backup under ``name`` (default: the backup's), keeping every version number. An existing
        key is refused unless ``force``; then its versions and settings are replaced in place, so the
        endpoints and policies that name it stay."""
        backup = backup_format.decode(text)
        name = name or backup.name
        key_type = self._key_type(backup.key_type, name)
        await asyncio.to_thread(_check_backup_material, key_type, backup)
        now = utcnow()
        async with self._db.writing() as session:
            row = await repo.get_key(session, self.mount.id, name, for_update=True)
            if row is not None and not force:
                raise RefusedAsServerError(f'key "{name}" already exists')
            if row is not None and row.type != key_type.name:
                raise InvalidRequest(
                    f"key {name} is a {row.type} key; a key's type never changes, restore it under a new name"
                )
            guarded = row is not None and not repo.key_settings(row).deletion_allowed
            if guarded:
                await self._refuse_destructive_restore(session, name, backup)
            sealed = [self._seal(name, v.version, v.material, v.created_at) for v in backup.versions]
            first, rest = sealed[0], sealed[1:]
            if row is None:
                row = await repo.create_key(
                    session,
                    self.mount.id,
                    name,
                    key_type.name,
                    now,
                    first,
                    _public_pem(backup.versions[0].material),
                    # The row starts at version 1 with the defaults (its checks hold); the backup's latest
                    # version and settings are set below, once every version is in.
                    KeySettings(),
                    SOURCE_API,
                )
            else:
                await repo.delete_versions(session, row)
                await repo.add_version(session, row, first, _public_pem(backup.versions[0].material))
            for stored, version in zip(rest, backup.versions[1:], strict=True):
                await repo.add_version(session, row, stored, _public_pem(version.material))
            changes = {n: getattr(backup.settings, n) for n in KeySettings.names()}
            if guarded:
                # A backup is unauthenticated input: restoring one must not be a way to allow deletion.
                changes["deletion_allowed"] = False
            await repo.bump(session, row, now, type=key_type.name, latest_version=backup.latest_version, **changes)
            self._db.changed(session, self._changed(name))
        log.info("restored key %s (%d versions)", self._ref(name), len(backup.versions))

    async def _refuse_destructive_restore(self, session: AsyncSession, name: str, backup: backup_format.Backup) -> None:
        """A forced restore replaces every version: over a key without ``deletion_allowed`` it may only keep
        what the key holds (each version in the backup, unchanged) and add to it; dropping or replacing a
        version would destroy it, as a delete would, so it needs the same permission."""
        stored = await repo.load_key(session, self.mount.id, name)
        assert stored is not None
        restored = {v.version: v.material for v in backup.versions}
        lost = []
        for sv in stored.versions:
            held = self._unseal(self._ref(name), sv)
            kept = restored.get(sv.version)
            if kept is None or (kept.key, kept.hmac_key, kept.public_key) != (held.key, held.hmac_key, held.public_key):
                lost.append(sv.version)
        if lost:
            raise InvalidRequest(
                f"key {name} does not allow deletion: this restore would replace or drop version(s) "
                f"{', '.join(map(str, lost))}; set deletion_allowed on the key first"
            )

    async def configure(self, name: str, change: KeyConfigChange) -> tuple[Key, list[str]]:
        async with self._db.writing() as session:
            row = await repo.get_key(session, self.mount.id, name, for_update=True)
            if row is None:
                raise InvalidRequest(f"no existing key named {name} could be found")
            _refuse_soft_deleted(row)
            settings, warnings = repo.key_settings(row).configured(change, row.latest_version)
            if await repo.save_settings(session, row, settings, utcnow()):
                self._db.changed(session, self._changed(name))
            stored = await repo.load_key(session, self.mount.id, name)
        return await self._remember(stored), warnings

    async def upgrade_legacy_material(self) -> int:
        """Re-seal pre-envelope versions (format 0, a raw key) as envelopes with a fresh HMAC key. One
        transaction; safe to run on every start and from several nodes at once (only format-0 rows)."""
        async with self._db.writing() as session:
            legacy = await repo.legacy_versions(session, material_format=0)
            for item in legacy:
                ref = key_ref(item.mount_path, item.key_name)
                aad = key_material_aad(ref, item.version, 0)
                try:
                    raw = self._master_key.unseal(item.sealed_material, aad)
                except SealError:
                    raise InternalError(
                        f"key {item.key_name} version {item.version} does not open with the master key"
                    ) from None
                key_type = self._key_type(item.key_type, item.key_name)
                material = KeyMaterial.upgrade_legacy(raw, key_type.public_key(raw))
                sealed = self._master_key.seal(
                    material.to_bytes(), key_material_aad(ref, item.version, ENVELOPE_FORMAT)
                )
                await repo.reseal_version(
                    session, item.key_id, item.version, sealed, ENVELOPE_FORMAT, self._master_key.key_id
                )
            if legacy:
                await repo.bump_generation(session, (item.key_id for item in legacy), utcnow())
                refs = {key_ref(i.mount_path, i.key_name) for i in legacy}
                self._db.changed(session, *(Change(Kind.KEY, ref) for ref in refs))
        if legacy:
            log.info("upgraded %d key version(s) to the key material envelope", len(legacy))
        return len(legacy)


def _retention_floors(row, latest_version: int) -> dict[str, int]:
    """The min versions version retention moves once ``latest_version`` exists (none when it is off)."""
    settings = repo.key_settings(row)
    retained = settings.after_rotation(latest_version)
    return {
        n: getattr(retained, n)
        for n in ("min_decryption_version", "min_encryption_version")
        if getattr(retained, n) != getattr(settings, n)
    }


def _public_pem(material: KeyMaterial) -> str | None:
    """The PEM kept in key_versions.public_key for operators (the sealed envelope is authoritative)."""
    return public_key_pem(material.public_key) if material.public_key is not None else None


def _refuse_soft_deleted(row) -> None:
    if row.soft_deleted:
        raise InvalidRequest(SOFT_DELETED)


def _check_backup_material(key_type: KeyType, backup: backup_format.Backup) -> None:
    """Every version must load as the backup's type, with the public key its private key implies: a backup
    is input, and an edited one must not leave a key that fails on every use."""
    for version in backup.versions:
        material = version.material
        try:
            key_type.load(material)
            if material.has_private_key and material.public_key != key_type.public_key(material.key):
                raise ValueError("public key")
        except Exception:  # noqa: BLE001 - untrusted bytes into the crypto libraries: any failure is the input's
            raise InvalidRequest("invalid backup: its key material does not fit its key type") from None
        weakness = key_type.weakness(material)
        if weakness is not None:
            raise InvalidRequest(f"invalid backup: version {version.version} is weak key material ({weakness})")


def _refuse_weak(key_type: KeyType, material: KeyMaterial) -> None:
    weakness = key_type.weakness(material)
    if weakness is not None:
        raise InvalidRequest(f"refusing weak key material: {weakness}")
