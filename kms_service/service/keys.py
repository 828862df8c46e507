"""Keys of one transit mount: the cache of key snapshots, the mount's settings, and every key write as
one transaction holding the key's row lock. ``MountService`` makes one ``KeyService`` per mount.

Slow work never runs on the event loop nor under a lock: new material is generated in a worker thread
before the transaction starts, and crypto objects are built in a worker thread after it ends, lazily, for
the versions a request actually uses.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from kms_service import backup as backup_format
from kms_service import certificates
from kms_service.errors import InternalError, InvalidRequest, RefusedAsServerError, SealError
from kms_service.keyring import MAX_VERSION, Key, KeyConfigChange, KeySettings, KeyVersion
from kms_service.keytypes import KEY_TYPES, KeyType, public_key_pem
from kms_service.material import ENVELOPE_FORMAT, KeyMaterial
from kms_service.mounts import Mount, key_ref
from kms_service.seal import Sealer, key_material_aad
from kms_service.service.caching import BackgroundRefresh, CacheStats, SingleFlight
from kms_service.service.database_watch import DatabaseWatch
from kms_service.service.invalidation import Change, Invalidator, Kind
from kms_service.storage import repository as repo
from kms_service.storage.database import Database

log = logging.getLogger(__name__)

# A request naming a version newer than the key's latest asks the database at most this often per key:
# the version may have been created by another node a moment ago, but a made-up one must not cost a query
# per request.
TOO_NEW_PROBE_INTERVAL = 0.25

# keys.source: where a key was made.
SOURCE_CONFIG = "services-yaml"
SOURCE_API = "api"
# The SingleFlight keys of building a key's versions (KeyService.prepare) start with this; a key's load is its name.
PREPARING = "prepare"

# Each mount's settings and Vault's defaults: config/keys disable_upsert, cache-config size.
ENGINE_DEFAULTS: dict[str, Any] = {"disable_upsert": False, "cache_size": 0}


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class _CachedKey:
    key: Key
    checked_at: float
    # Each version's sealed bytes as read: a version is rebuilt only if they change (a certificate chain
    # set on another node, a restore, a master-key re-seal).
    sealed: dict[int, bytes]
    # When a too-new version was last looked for in the database.
    probed_at: float = float("-inf")


class UnopenedMaterial(InternalError):
    """A version's sealed material does not open with any master key this process holds."""


class KeyService:
    def __init__(
        self,
        db: Database,
        master_key: Sealer,
        cache_ttl: float,
        mount: Mount,
        invalidator: Invalidator,
        watch: DatabaseWatch,
        cache_stats: CacheStats | None = None,
    ) -> None:
        self._db = db
        self._master_key = master_key
        self._cache_ttl = cache_ttl
        # During a database outage it says how long cached keys may still answer (--stale-while-down).
        self._watch = watch
        self.mount = mount
        self._cache: dict[str, _CachedKey] = {}
        self._loading = SingleFlight()
        self._ahead = BackgroundRefresh(watch, cache_ttl)
        # Changes reach this cache through MountService (forget); the epoch tells a read that raced one.
        self._invalidator = invalidator
        # Shared with the KMS (and so with every KeyService it makes), which the metrics read.
        self.cache_stats = cache_stats if cache_stats is not None else CacheStats()

    def forget(self, name: str | None) -> None:
        """Drop a cached key (None: all), after a committed change to it (``MountService`` routes them)."""
        if name is None:
            self._cache.clear()
        else:
            self._cache.pop(name, None)

    def _ref(self, name: str) -> str:
        """The key's reference: what its sealed material is bound to and its changes name."""
        return key_ref(self.mount.path, name)

    def _changed(self, name: str) -> Change:
        return Change(Kind.KEY, self._ref(name))

    async def engine_settings(self) -> dict[str, Any]:
        """The mount's settings (config/keys, cache-config), Vault's defaults for what is unset."""
        async with self._db.reading() as session:
            stored = await repo.engine_settings(session, self.mount.id)
        return {**ENGINE_DEFAULTS, **{name: json.loads(value) for name, value in stored.items()}}

    async def set_engine_settings(self, **values: Any) -> dict[str, Any]:
        async with self._db.writing() as session:
            for name, value in values.items():
                if name not in ENGINE_DEFAULTS:
                    raise InternalError(f"unknown engine setting {name}")
                await repo.put_engine_setting(session, self.mount.id, name, json.dumps(value), utcnow())
        return await self.engine_settings()

    async def get(self, name: str, versions: Iterable[int] = (0,)) -> Key | None:
        """The key, from cache when fresh, with the crypto objects of ``versions`` built (0 = latest).
        A version newer than the cached latest forces a (throttled) check: another node may have rotated."""
        wanted = tuple(versions)
        need = max(wanted, default=0)
        key = self._fresh(name, need)
        if key is not None:
            self.cache_stats.hits += 1
        else:
            self.cache_stats.misses += 1
            async with self._loading(name):
                key = self._fresh(name, need) or await self._refresh(name, need)
        if key is not None:
            await self.prepare(key, wanted)
        return key

    def _fresh(self, name: str, need_version: int) -> Key | None:
        entry = self._cache.get(name)
        if entry is None:
            return None
        now = time.monotonic()
        if need_version > entry.key.latest_version and now - entry.probed_at >= TOO_NEW_PROBE_INTERVAL:
            return None
        age = now - entry.checked_at
        if not self._watch.trusts(age, self._cache_ttl):
            return None
        if self._ahead.due(name, age):
            self._ahead.start(name, lambda: self._refresh_ahead(name))
        return entry.key

    async def _refresh_ahead(self, name: str) -> None:
        async with self._loading(name):
            entry = self._cache.get(name)
            if entry is not None and time.monotonic() - entry.checked_at >= self._ahead.after:
                await self._refresh(name, 0)

    async def stop_refreshing(self) -> None:
        await self._ahead.stop()

    async def _refresh(self, name: str, need_version: int) -> Key | None:
        entry = self._cache.get(name)
        try:
            return await self._load_due(name, need_version, entry)
        except Exception as exc:
            # The database went away as this entry came due: within --stale-while-down it still answers.
            if entry is None or need_version > entry.key.latest_version or not self._watch.noticed(exc):
                raise
            return entry.key

    async def _load_due(self, name: str, need_version: int, entry: _CachedKey | None) -> Key | None:
        epoch = self._invalidator.epoch
        if entry is not None:
            # Stale but maybe unchanged: one cheap generation check before reloading every version.
            async with self._db.reading() as session:
                generation = await repo.key_generation(session, self.mount.id, name)
            if generation == entry.key.generation:
                now = time.monotonic()
                entry.checked_at = now
                if need_version > entry.key.latest_version:
                    entry.probed_at = now
                return entry.key
        async with self._db.reading() as session:
            stored = await repo.load_key(session, self.mount.id, name)
        if stored is None:
            self._cache.pop(name, None)
            return None
        key = await self._remember(stored, epoch)
        cached = self._cache.get(name)
        if need_version > key.latest_version and cached is not None:
            cached.probed_at = time.monotonic()
        return key

    async def prepare(self, key: Key, versions: tuple[int, ...]) -> None:
        """Build the crypto objects a request will use, in a worker thread (RSA takes long to load)."""
        pending = []
        for number in versions:
            kv = key.versions.get(number or key.latest_version)
            if kv is not None and not kv.loaded:
                pending.append(kv)
        for kv in pending:
            # Once per version: the requests that found a key just loaded all need the same versions built.
            async with self._loading((PREPARING, key.name, kv.version)):
                if not kv.loaded:
                    await asyncio.to_thread(kv.load)

    async def _remember(self, stored: repo.StoredKey, epoch: int | None = None) -> Key:
        """Cache a freshly read key, unless a concurrent writer already cached a newer generation.

        ``epoch``: the invalidator's epoch before ``stored`` was read (default: now, for a writer that read
        it in its own transaction). If a change was published since, ``stored`` may predate it: it is
        cached as due for a generation check, so the next request looks again."""
        if epoch is None:
            epoch = self._invalidator.epoch
        entry = self._cache.get(stored.row.name)
        try:
            key = await asyncio.to_thread(self._build, stored, entry)
        except UnopenedMaterial:
            if not await self._master_key.catch_up():  # re-sealed under a master key this process lacked?
                raise
            key = await asyncio.to_thread(self._build, stored, entry)
        entry = self._cache.get(key.name)
        if entry is None or entry.key.generation <= key.generation:
            sealed = {sv.version: sv.sealed_material for sv in stored.versions}
            checked_at = time.monotonic() if epoch == self._invalidator.epoch else float("-inf")
            self._cache[key.name] = _CachedKey(key, checked_at, sealed)
            return key
        return entry.key

    def _build(self, stored: repo.StoredKey, previous: _CachedKey | None) -> Key:
        row = stored.row
        key_type = self._key_type(row.type, row.name)
        ref = self._ref(row.name)
        versions = {}
        for sv in stored.versions:
            # A version whose sealed bytes are unchanged keeps its built crypto object.
            old = previous.key.versions.get(sv.version) if previous else None
            if old is not None and previous.sealed.get(sv.version) == sv.sealed_material and old.key_type is key_type:
                versions[sv.version] = old
                continue
            versions[sv.version] = KeyVersion(sv.version, sv.created_at, self._unseal(ref, sv), key_type)
        return Key(
            name=row.name,
            key_type=key_type,
            latest_version=row.latest_version,
            settings=stored.settings,
            generation=row.generation,
            versions=versions,
            key_id=row.id,
        )

    @staticmethod
    def _key_type(type_name: str, key_name: str) -> KeyType:
        key_type = KEY_TYPES.get(type_name)
        if key_type is None:
            raise InternalError(f"key {key_name} has a type this server does not know")
        return key_type

    def _unseal(self, ref: str, sv: repo.StoredVersion) -> KeyMaterial:
        """``ref``: the key's reference (``_ref``), which the material is bound to."""
        if sv.material_format != ENVELOPE_FORMAT:
            raise InternalError(f"key {ref} version {sv.version} is stored in an old format; restart to upgrade it")
        try:
            sealed = self._master_key.unseal(sv.sealed_material, key_material_aad(ref, sv.version, sv.material_format))
        except SealError:
            raise UnopenedMaterial(f"key {ref} version {sv.version} does not open with the master key") from None
        return KeyMaterial.from_bytes(sealed)

    def _seal(self, name: str, version: int, material: KeyMaterial, now: datetime) -> repo.StoredVersion:
        aad = key_material_aad(self._ref(name), version, ENVELOPE_FORMAT)
        sealed = self._master_key.seal(material.to_bytes(), aad)
        return repo.StoredVersion(version, sealed, ENVELOPE_FORMAT, self._master_key.key_id, now)

    # -- writes -------------------------------------------------------------------------------------------

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

    async def _reload(self, name: str) -> Key | None:
        epoch = self._invalidator.epoch
        async with self._db.reading() as session:
            stored = await repo.load_key(session, self.mount.id, name)
        return None if stored is None else await self._remember(stored, epoch)

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

    async def backup(self, name: str) -> str:
        key = await self.get(name, ())
        if key is None:
            raise RefusedAsServerError(f'key "{name}" not found')
        if key.settings.soft_deleted:
            raise InvalidRequest(SOFT_DELETED)
        if not key.settings.exportable:
            raise RefusedAsServerError("exporting is disallowed on the policy")
        if not key.settings.allow_plaintext_backup:
            raise RefusedAsServerError("plaintext backup is disallowed on the policy")
        log.info("made a plaintext backup of key %s", self._ref(name))
        return backup_format.encode(key, utcnow())

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
            await repo.bump(session, row, now, type=key_type.name, latest_version=backup.latest_version, **changes)
            self._db.changed(session, self._changed(name))
        log.info("restored key %s (%d versions)", self._ref(name), len(backup.versions))

    async def sources(self) -> dict[str, int]:
        async with self._db.reading() as session:
            return await repo.key_sources(session)

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

    async def names(self, metadata: dict[str, str] | None = None) -> list[str]:
        """The mount's key names; with ``metadata``, only keys whose custom_metadata holds every pair."""
        async with self._db.reading() as session:
            if not metadata:
                return await repo.list_key_names(session, self.mount.id)
            labelled = await repo.list_key_metadata(session, self.mount.id)
        return [name for name, labels in labelled if all(labels.get(k) == v for k, v in metadata.items())]

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


SOFT_DELETED = "refusing to use soft-deleted key"


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
