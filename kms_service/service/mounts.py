"""Mounts: the transit engines of this server, each a ``KeyService`` over its own keys and settings.

The mount table is small and read on every request (which mount does ``/v1/<path>`` name?), so it is
cached whole: trusted for ``cache_ttl``, dropped by a committed mount change, and re-read at most every
``MISS_PROBE_INTERVAL`` when a request names a path no cached mount holds (another node may have just
enabled it; a made-up path must not cost a query per request). The namespaces are read with it (a
request's namespace is resolved on every request too; they change as rarely), and a namespace change is a
mount change. A namespace's mounts are stored under its path (``ns1/transit``); callers name them relative
to the request's namespace.
"""

from __future__ import annotations

import json
import logging
import secrets
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from kms_service.errors import InvalidRequest, UnknownNamespace
from kms_service.mounts import DEFAULT_MOUNT, MOUNT_TYPES, RESERVED, Mount, conflict, key_ref, normalized_path
from kms_service.namespaces import ROOT, Namespace, header_segments, joined
from kms_service.namespaces import segments as namespace_segments
from kms_service.seal import Sealer
from kms_service.service.caching import CacheStats, OnRace, RefreshingCache
from kms_service.service.database_watch import DatabaseWatch
from kms_service.service.invalidation import Change, Invalidator, Kind
from kms_service.service.keys import KeyService
from kms_service.storage import models as m
from kms_service.storage import repository as repo
from kms_service.storage.database import Database

log = logging.getLogger(__name__)

MISS_PROBE_INTERVAL = 0.25
# The mount table's one cache entry.
TABLE = "mounts"


def utcnow() -> datetime:
    return datetime.now(UTC)


def _mount(row: m.Mount) -> Mount:
    return Mount(
        id=row.id,
        path=row.path,
        type=row.type,
        description=row.description,
        accessor=row.accessor,
        uuid=row.uuid,
        created_at=row.created_at,
        config=json.loads(row.config or "{}"),
        options=json.loads(row.options or "{}"),
    )


def _namespace(row: m.Namespace) -> Namespace:
    return Namespace(
        path=row.path,
        id=row.public_id,
        uuid=row.uuid,
        created_at=row.created_at,
        custom_metadata=json.loads(row.custom_metadata or "{}"),
    )


@dataclass(frozen=True)
class _MountTable:
    by_path: dict[str, Mount]
    depth: int  # the most segments a mount's path has
    namespaces: dict[str, Namespace]  # by path: "ns1/", "ns1/child/"


def namespace_of(path: str) -> str:
    """The parent of a namespace path: ``ns1/child/`` → ``ns1/``, ``ns1/`` → ``""``."""
    return path[: path.rstrip("/").rfind("/") + 1]


def owner(namespaces: dict[str, Namespace] | set[str], path: str) -> str:
    """The namespace a stored mount path (``ns1/child/transit``) lives in: its longest namespace prefix."""
    parts = path.split("/")
    found = ""
    for k in range(1, len(parts)):
        prefix = joined("", *parts[:k])
        if prefix not in namespaces:
            break
        found = prefix
    return found


class MountService:
    def __init__(
        self,
        db: Database,
        master_key: Sealer,
        cache_ttl: float,
        invalidator: Invalidator,
        cache_stats: CacheStats | None = None,
        *,
        watch: DatabaseWatch,
    ) -> None:
        self._db = db
        self._cache_stats = cache_stats
        self._watch = watch
        self._master_key = master_key
        self._cache_ttl = cache_ttl
        self._invalidator = invalidator
        # The whole table is one entry. A mount change makes it due (kept: during an outage it still
        # answers); a read racing a change is cached as due too.
        self._table: RefreshingCache[str, _MountTable, None] = RefreshingCache(
            ttl=cache_ttl, watch=watch, invalidator=invalidator, load=self._read, on_race=OnRace.CACHE_DUE
        )
        self._probed_at = float("-inf")
        self._key_services: dict[int, KeyService] = {}
        invalidator.subscribe(Kind.MOUNT, self._on_mount_change)
        invalidator.subscribe(Kind.KEY, self._on_key_change)

    # -- the cache --------------------------------------------------------------------------------------

    @property
    def _mounts(self) -> dict[str, Mount]:
        """The mounts as last read, however long ago (empty before the first read)."""
        table = self._table.peek(TABLE)
        return {} if table is None else table.by_path

    def _on_mount_change(self, change: Change) -> None:
        self._table.expire(TABLE)

    def _on_key_change(self, change: Change) -> None:
        """A key change names the key's reference (``<mount>/<name>``, or the bare name in transit/)."""
        if change.name is None:
            for keys in self._key_services.values():
                keys.forget(None)
            return
        mount_path, _, name = change.name.rpartition("/")
        mount = self._mounts.get(mount_path or DEFAULT_MOUNT)
        keys = self._key_services.get(mount.id) if mount is not None else None
        if keys is not None:
            keys.forget(name)

    async def load(self) -> None:
        """Re-read the mount table (one query). The key services of mounts that are gone are dropped."""
        await self._table.reload(TABLE, None)

    async def _read(self, _table: str, _held: _MountTable | None, _request: None) -> _MountTable:
        """The cache's loader: the table as stored now."""
        async with self._db.reading() as session:
            rows = await repo.list_mounts(session)
            namespaces = {row.path: _namespace(row) for row in await repo.list_namespaces(session)}
        mounts = {row.path: _mount(row) for row in rows}
        live = {mount.id for mount in mounts.values()}
        for mount_id in [i for i in self._key_services if i not in live]:
            del self._key_services[mount_id]
        self._probed_at = time.monotonic()
        return _MountTable(mounts, max((len(mount.segments) for mount in mounts.values()), default=1), namespaces)

    async def stop_refreshing(self) -> None:
        """Cancel the background refreshes of the mount table and of every mount's keys (at close)."""
        await self._table.stop_refreshing()
        for keys in list(self._key_services.values()):
            await keys.stop_refreshing()

    async def _probe(self, table: _MountTable) -> _MountTable:
        """The table read again if it was not read within MISS_PROBE_INTERVAL (another node may have just
        changed it); the requests that missed together wait for one read."""
        if time.monotonic() - self._probed_at >= MISS_PROBE_INTERVAL:
            await self._table.reload(
                TABLE, None, unless=lambda: time.monotonic() - self._probed_at < MISS_PROBE_INTERVAL
            )
            table = self._table.peek(TABLE) or table
        return table

    async def resolve(self, segments: Sequence[str], namespace: str = "") -> tuple[Mount, list[str]] | None:
        """The mount of ``namespace`` a request path starts with (the longest match), and the segments after
        it. A path no cached mount holds reads the table again (``_probe``)."""
        full = [*namespace_segments(namespace), *segments]
        table = await self._table.get(TABLE, None)
        found = _longest(table.by_path, full, table.depth, len(full) - len(segments))
        if found is None:
            table = await self._probe(table)
            found = _longest(table.by_path, full, table.depth, len(full) - len(segments))
        return found

    async def resolve_namespace(self, header: str | None, segments: Sequence[str]) -> tuple[str, list[str]]:
        """A request's namespace and the path's segments within it: the ``X-Vault-Namespace`` header's, then
        as many leading path segments as name namespaces below it, as Vault joins them. A header naming no
        namespace is a 404."""
        named = header_segments(header)
        if named is None:
            raise UnknownNamespace()
        if not named and (not segments or segments[0].lower() in RESERVED):
            # The root namespace's own paths (sys/health above all): no namespace is named so, so the
            # table is not asked, and they answer while the database is away.
            return ROOT, list(segments)
        table = await self._table.get(TABLE, None)
        base = joined("", *named)
        if base and base not in table.namespaces:
            table = await self._probe(table)
            if base not in table.namespaces:
                raise UnknownNamespace()
        if not table.namespaces:
            return base, list(segments)
        namespace, rest = base, list(segments)
        while len(rest) > 1 and joined(namespace, rest[0]) in table.namespaces:
            namespace, rest = joined(namespace, rest[0]), rest[1:]
        return namespace, rest

    def known_namespace(self, path: str) -> Namespace | None:
        """The namespace at ``path`` as last read (no query: a request's namespace was just resolved)."""
        table = self._table.peek(TABLE)
        return None if table is None else table.namespaces.get(path)

    async def namespaces(self) -> dict[str, Namespace]:
        """Every namespace by path, as read now."""
        await self.load()
        table = self._table.peek(TABLE)
        return {} if table is None else dict(table.namespaces)

    def key_service(self, mount: Mount) -> KeyService:
        """The keys and settings of ``mount`` (one KeyService per mount, made on first use)."""
        keys = self._key_services.get(mount.id)
        if keys is None or (keys.mount is not mount and keys.mount != mount):
            keys = KeyService(
                self._db, self._master_key, self._cache_ttl, mount, self._invalidator, self._watch, self._cache_stats
            )
            self._key_services[mount.id] = keys
        return keys

    @property
    def default(self) -> KeyService:
        """transit/: the services YAML's keys."""
        return self.key_service(self._mounts[DEFAULT_MOUNT])

    async def list(self, namespace: str = "") -> list[Mount]:
        """The mounts of ``namespace`` (not those of the namespaces below it)."""
        await self.load()
        table = self._table.peek(TABLE)
        spaces = table.namespaces if table is not None else {}
        mine = [mount for mount in self._mounts.values() if owner(spaces, mount.path) == namespace]
        return sorted(mine, key=lambda mount: mount.path)

    async def read(self, raw_path: str, namespace: str = "") -> Mount:
        path = raw_path.strip("/")
        await self.load()
        mount = self._mounts.get(namespace + path)
        if mount is None:
            raise InvalidRequest(f"No secret engine mount at {path}/")
        return mount

    # -- writes -----------------------------------------------------------------------------------------

    async def enable(
        self,
        raw_path: str,
        mount_type: Any,
        description: str,
        config: dict[str, Any],
        options: dict[str, Any],
        namespace: str = "",
    ) -> Mount:
        """Vault's ``sys/mounts/:path``: a new transit engine at ``path``. Mount changes take the writers'
        lock, so two nodes enabling ``a`` and ``a/b`` at once cannot both succeed."""
        if not isinstance(mount_type, str) or not mount_type:
            raise InvalidRequest("backend type must be specified as a string")
        path = normalized_path(raw_path)
        if path.rsplit("/", 1)[-1] == "tune":
            raise InvalidRequest(f"invalid mount path {path!r}: its last segment may not be 'tune'")
        if mount_type not in MOUNT_TYPES:
            raise InvalidRequest(f"plugin not found in the catalog: {mount_type}")
        relative, path = path, namespace + path
        now = utcnow()
        async with self._db.writing() as session:
            await repo.serialize_writers(session)
            existing = [row.path for row in await repo.list_mounts(session)]
            if (taken := conflict(existing, path)) is not None:
                raise InvalidRequest(f"path is already in use at {taken.removeprefix(namespace)}/")
            # A namespace below this one holds the path (or its start): Vault finds that namespace's mounts.
            spaces = {row.path for row in await repo.list_namespaces(session)}
            for k in range(1, len(relative.split("/")) + 1):
                inner = joined("", *relative.split("/")[:k])
                if namespace + inner in spaces:
                    raise InvalidRequest(f"existing mount at {inner}")
            row = await repo.add_mount(
                session,
                m.Mount(
                    path=path,
                    type=mount_type,
                    description=description,
                    accessor=f"{mount_type}_{secrets.token_hex(4)}",
                    uuid=str(uuid.uuid4()),
                    config=json.dumps(config, sort_keys=True),
                    options=json.dumps(options, sort_keys=True),
                    created_at=now,
                    updated_at=now,
                ),
            )
            mount = _mount(row)
            self._db.changed(session, Change(Kind.MOUNT, path))
        log.info("enabled a %s engine at %s/", mount_type, path)
        return mount

    async def tune(self, raw_path: str, description: str | None, config: dict[str, Any], namespace: str = "") -> Mount:
        path = namespace + raw_path.strip("/")
        async with self._db.writing() as session:
            row = await repo.get_mount(session, path, for_update=True)
            if row is None:
                raise InvalidRequest(f"No secret engine mount at {raw_path.strip('/')}/")
            if description is not None:
                row.description = description
            if config:
                row.config = json.dumps({**json.loads(row.config or "{}"), **config}, sort_keys=True)
            row.updated_at = utcnow()
            await session.flush()
            mount = _mount(row)
            self._db.changed(session, Change(Kind.MOUNT, path))
        return mount

    async def disable(self, raw_path: str, force: bool, namespace: str = "") -> list[str]:
        """Vault's ``DELETE sys/mounts/:path``, made safe: a mount holding keys is refused; with ``force``,
        its keys go too, but only if every one of them allows deletion (``deletion_allowed``), as deleting
        each would require. transit/ holds the services YAML's keys and stays. Returns the deleted keys."""
        path = namespace + raw_path.strip("/")
        if path == DEFAULT_MOUNT:
            raise InvalidRequest(f"cannot unmount {DEFAULT_MOUNT}/: it holds the services YAML's keys")
        async with self._db.writing() as session:
            await repo.serialize_writers(session)
            row = await repo.get_mount(session, path, for_update=True)
            if row is None:
                return []  # Vault: disabling what is not mounted succeeds
            keys = await repo.keys_in_mount(session, row.id)
            names = [key.name for key in keys]
            if keys and not force:
                raise InvalidRequest(
                    f"mount {path}/ holds {len(keys)} key(s) ({_listed(names)}): delete them first, or disable "
                    "it with force=true to delete them too (each must have deletion_allowed)"
                )
            if kept := [key.name for key in keys if not repo.key_settings(key).deletion_allowed]:
                raise InvalidRequest(
                    f"mount {path}/ was not disabled: deletion is not allowed for key(s) {_listed(kept)}; set "
                    "deletion_allowed on each first"
                )
            for key in keys:
                await repo.delete_key(session, key)
            await repo.delete_mount(session, row.id)
            self._db.changed(
                session,
                Change(Kind.MOUNT, path),
                Change(Kind.POLICY),
                *(Change(Kind.KEY, key_ref(path, name)) for name in names),
            )
        log.info("disabled %s/ (%d key(s) deleted)", path, len(names))
        return names

    # -- across mounts ----------------------------------------------------------------------------------

    async def rotate_due(self, now: datetime | None = None) -> list[str]:
        """Rotate every key, in every mount, whose auto_rotate_period has passed (see KeyService.rotate_due)."""
        async with self._db.reading() as session:
            candidates = await repo.keys_with_auto_rotation(session)
        await self.load()
        by_id = {mount.id: mount for mount in self._mounts.values()}
        rotated = []
        for mount_id in sorted({c.mount_id for c in candidates}):
            mount = by_id.get(mount_id)
            if mount is not None:
                mine = [c for c in candidates if c.mount_id == mount_id]
                rotated += [key_ref(mount.path, n) for n in await self.key_service(mount).rotate_due(mine, now)]
        if rotated:
            log.info("auto-rotated %d key(s): %s", len(rotated), ", ".join(rotated))
        return rotated


def _longest(
    mounts: dict[str, Mount], segments: Sequence[str], depth: int, at_least: int = 0
) -> tuple[Mount, list[str]] | None:
    """The longest mount path ``segments`` starts with, longer than ``at_least`` segments (the namespace's)."""
    for k in range(min(depth, len(segments)), at_least, -1):
        mount = mounts.get("/".join(segments[:k]))
        if mount is not None:
            return mount, list(segments[k:])
    return None


def _listed(names: list[str], most: int = 10) -> str:
    shown = ", ".join(names[:most])
    return shown + (f" and {len(names) - most} more" if len(names) > most else "")
