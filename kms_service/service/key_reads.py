"""The reading half of a mount's ``KeyService``: the cache of key snapshots (a ``RefreshingCache``), the key
reads, and the unsealing that turns stored versions into crypto objects. The writes are in ``keys.py``.

Crypto objects are built in a worker thread, lazily, for the versions a request actually uses.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from kms_service import backup as backup_format
from kms_service.errors import InternalError, InvalidRequest, RefusedAsServerError, SealError
from kms_service.keyring import Key, KeyVersion
from kms_service.keytypes import KEY_TYPES, KeyType
from kms_service.material import ENVELOPE_FORMAT, KeyMaterial
from kms_service.mounts import Mount, key_ref
from kms_service.seal import Sealer, key_material_aad
from kms_service.service.caching import CacheStats, OnRace, RefreshingCache, SingleFlight
from kms_service.service.database_watch import DatabaseWatch
from kms_service.service.invalidation import Change, Invalidator, Kind
from kms_service.storage import repository as repo
from kms_service.storage.database import Database

log = logging.getLogger(__name__)

# A request naming a version newer than the key's latest asks the database at most this often per key:
# the version may have been created by another node a moment ago, but a made-up one must not cost a query
# per request.
TOO_NEW_PROBE_INTERVAL = 0.25

# Each mount's settings and Vault's defaults: config/keys disable_upsert, cache-config size.
MOUNT_SETTING_DEFAULTS: dict[str, Any] = {"disable_upsert": False, "cache_size": 0}

SOFT_DELETED = "refusing to use soft-deleted key"


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class _CachedKey:
    key: Key
    # Each version's sealed bytes as read: a version is rebuilt only if they change (a certificate chain
    # set on another node, a restore, a master-key re-seal).
    sealed: dict[int, bytes]
    # When a too-new version was last looked for in the database.
    probed_at: float = float("-inf")


def _answers_version(cached: _CachedKey, need_version: int) -> bool:
    """A version newer than the cached latest: look in the database, unless that was done a moment ago."""
    if need_version <= cached.key.latest_version:
        return True
    return time.monotonic() - cached.probed_at < TOO_NEW_PROBE_INTERVAL


class UnopenedMaterial(InternalError):
    """A version's sealed material does not open with any master key this process holds."""


class KeyReads:
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
        self.mount = mount
        # Changes reach this cache through MountService (forget); the epoch tells a read that raced one.
        self._invalidator = invalidator
        # Shared with the KMS (and so with every KeyService it makes), which the metrics read.
        self.cache_stats = cache_stats if cache_stats is not None else CacheStats()
        # Keyed by name; a load asks for the version the request needs (0: the latest). A key gone from the
        # database is not cached; a load racing a change is cached as due for a generation check; a load
        # never replaces a newer generation a writer cached meanwhile.
        self._cache: RefreshingCache[str, _CachedKey | None, int] = RefreshingCache(
            ttl=cache_ttl,
            watch=watch,
            invalidator=invalidator,
            load=self._load,
            keep=lambda cached: cached is not None,
            replaces=lambda cached, loaded: cached.key.generation <= loaded.key.generation,
            usable=_answers_version,
            stale_answers=lambda cached, need_version: need_version <= cached.key.latest_version,
            on_race=OnRace.CACHE_DUE,
            stats=self.cache_stats,
        )
        # Building a key version's crypto objects: once for the requests that found a key just loaded.
        self._preparing = SingleFlight()

    def forget(self, name: str | None) -> None:
        """Drop a cached key (None: all), after a committed change to it (``MountService`` routes them)."""
        if name is None:
            self._cache.clear()
        else:
            self._cache.drop(name)

    def _ref(self, name: str) -> str:
        """The key's reference: what its sealed material is bound to and its changes name."""
        return key_ref(self.mount.path, name)

    def _changed(self, name: str) -> Change:
        return Change(Kind.KEY, self._ref(name))

    async def mount_settings(self) -> dict[str, Any]:
        """The mount's settings (config/keys, cache-config), Vault's defaults for what is unset."""
        async with self._db.reading() as session:
            stored = await repo.mount_settings(session, self.mount.id)
        return {**MOUNT_SETTING_DEFAULTS, **{name: json.loads(value) for name, value in stored.items()}}

    async def get(self, name: str, versions: Iterable[int] = (0,)) -> Key | None:
        """The key, from cache when fresh, with the crypto objects of ``versions`` built (0 = latest).
        A version newer than the cached latest forces a (throttled) check: another node may have rotated."""
        wanted = tuple(versions)
        cached = await self._cache.get(name, max(wanted, default=0))
        if cached is None:
            return None
        await self.prepare(cached.key, wanted)
        return cached.key

    async def stop_refreshing(self) -> None:
        await self._cache.stop_refreshing()

    async def _load(self, name: str, held: _CachedKey | None, need_version: int) -> _CachedKey | None:
        """The cache's loader: the key as stored now (None: there is none)."""
        if held is not None:
            # Stale but maybe unchanged: one cheap generation check before reloading every version.
            async with self._db.reading() as session:
                generation = await repo.key_generation(session, self.mount.id, name)
            if generation == held.key.generation:
                if need_version > held.key.latest_version:
                    held.probed_at = time.monotonic()
                return held
        async with self._db.reading() as session:
            stored = await repo.load_key(session, self.mount.id, name)
        if stored is None:
            return None
        cached = await self._built(stored)
        if need_version > cached.key.latest_version:
            cached.probed_at = time.monotonic()
        return cached

    async def prepare(self, key: Key, versions: tuple[int, ...]) -> None:
        """Build the crypto objects a request will use, in a worker thread (RSA takes long to load)."""
        pending = []
        for number in versions:
            kv = key.versions.get(number or key.latest_version)
            if kv is not None and not kv.loaded:
                pending.append(kv)
        for kv in pending:
            # Once per version: the requests that found a key just loaded all need the same versions built.
            async with self._preparing((key.name, kv.version)):
                if not kv.loaded:
                    await asyncio.to_thread(kv.load)

    async def _remember(self, stored: repo.StoredKey, epoch: int | None = None) -> Key:
        """Cache a freshly read key, unless a concurrent writer already cached a newer generation.

        ``epoch``: the invalidator's epoch before ``stored`` was read (default: now, for a writer that read
        it in its own transaction). If a change was published since, ``stored`` may predate it: it is
        cached as due for a generation check, so the next request looks again."""
        built = await self._built(stored)
        return (self._cache.put(stored.row.name, built, epoch) or built).key  # a built key is always kept

    async def _built(self, stored: repo.StoredKey) -> _CachedKey:
        """``stored`` as a key snapshot, reusing the crypto objects of the cached versions it did not change."""
        previous = self._cache.peek(stored.row.name)
        try:
            key = await asyncio.to_thread(self._build, stored, previous)
        except UnopenedMaterial:
            if not await self._master_key.catch_up():  # re-sealed under a master key this process lacked?
                raise
            key = await asyncio.to_thread(self._build, stored, self._cache.peek(stored.row.name))
        return _CachedKey(key, {sv.version: sv.sealed_material for sv in stored.versions})

    async def _reload(self, name: str) -> Key | None:
        epoch = self._invalidator.epoch
        async with self._db.reading() as session:
            stored = await repo.load_key(session, self.mount.id, name)
        return None if stored is None else await self._remember(stored, epoch)

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

    async def sources(self) -> dict[str, int]:
        async with self._db.reading() as session:
            return await repo.key_sources(session)

    async def names(self, metadata: dict[str, str] | None = None) -> list[str]:
        """The mount's key names; with ``metadata``, only keys whose custom_metadata holds every pair."""
        async with self._db.reading() as session:
            if not metadata:
                return await repo.list_key_names(session, self.mount.id)
            labelled = await repo.list_key_metadata(session, self.mount.id)
        return [name for name, labels in labelled if all(labels.get(k) == v for k, v in metadata.items())]
