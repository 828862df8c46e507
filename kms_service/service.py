"""Application services: keys, tokens and provisioning over storage, with the in-memory caches.

Each write is one database transaction; caches are only refreshed after the commit, through one
invalidation point per cache. Once warm, the crypto hot path (token check, key lookup) makes no query.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from kms_service.acl import ACL, acl_for, parse_policy
from kms_service.config import GRANT_KEY_TYPES, ServiceConfig
from kms_service.errors import ConfigError, InternalError, InvalidRequest, SealError
from kms_service.keyring import Key, KeyVersion
from kms_service.keytypes import KEY_TYPES
from kms_service.seal import SEAL_CHECK_AAD, SEAL_CHECK_PLAINTEXT, MasterKey, key_material_aad
from kms_service.storage import migrate
from kms_service.storage import repository as repo
from kms_service.storage.engine import Database, create_engine
from kms_service.tokens import (
    ACCESSOR_RE,
    TokenInfo,
    derived_token,
    looks_like_token,
    new_accessor,
    new_token,
    token_digest,
)

log = logging.getLogger(__name__)

ENDPOINT_TOKEN_TTL = timedelta(days=365)
# relationships re-issues an endpoint token when the current one has less than this left.
ENDPOINT_TOKEN_RENEW_WITHIN = timedelta(days=30)
DEFAULT_CACHE_TTL = 5.0
PROVISION_LOCK_ID = 0x6B6D735F70726F76


def utcnow() -> datetime:
    return datetime.now(UTC)


async def _serialize_writers(session: AsyncSession) -> None:
    """Nodes sharing PostgreSQL provision one at a time (SQLite's BEGIN IMMEDIATE already does this)."""
    if session.bind.dialect.name == "postgresql":
        await session.connection()
        await session.execute(text(f"SELECT pg_advisory_xact_lock({PROVISION_LOCK_ID})"))


class SingleFlight:
    """At most one cache load per key at a time: a cold or stale entry under load must not send every
    waiting request to the database. Waiters re-check the cache once they get the lock."""

    def __init__(self) -> None:
        self._locks: dict[object, asyncio.Lock] = {}

    @asynccontextmanager
    async def __call__(self, key: object) -> AsyncIterator[None]:
        lock = self._locks.setdefault(key, asyncio.Lock())
        try:
            async with lock:
                yield
        finally:
            self._locks.pop(key, None)


# -- keys ---------------------------------------------------------------------------------------------


@dataclass
class _CachedKey:
    key: Key
    checked_at: float


@dataclass(frozen=True)
class KeyConfigChange:
    min_decryption_version: int | None = None
    min_encryption_version: int | None = None
    deletion_allowed: bool | None = None
    exportable: bool | None = None
    allow_plaintext_backup: bool | None = None


class KeyService:
    def __init__(self, db: Database, master_key: MasterKey, cache_ttl: float) -> None:
        self._db = db
        self._master_key = master_key
        self._cache_ttl = cache_ttl
        self._cache: dict[str, _CachedKey] = {}
        self._loading = SingleFlight()

    def invalidate(self, name: str | None = None) -> None:
        """The one place cached keys are dropped (after a local write, or to force a reload)."""
        if name is None:
            self._cache.clear()
        else:
            self._cache.pop(name, None)

    async def get(self, name: str, need_version: int = 0) -> Key | None:
        """The key, from cache when fresh. ``need_version`` newer than the cached latest forces a reload:
        another node may have rotated (multi-node read-your-writes for ciphertexts)."""
        key = self._fresh(name, need_version)
        if key is not None:
            return key
        async with self._loading(name):
            return self._fresh(name, need_version) or await self._refresh(name, need_version)

    def _fresh(self, name: str, need_version: int) -> Key | None:
        entry = self._cache.get(name)
        if entry is None or need_version > entry.key.latest_version:
            return None
        return entry.key if time.monotonic() - entry.checked_at < self._cache_ttl else None

    async def _refresh(self, name: str, need_version: int) -> Key | None:
        entry = self._cache.get(name)
        if entry is not None and need_version <= entry.key.latest_version:
            # Stale but maybe unchanged: one cheap generation check before reloading every version.
            async with self._db.reading() as session:
                generation = await repo.key_generation(session, name)
            if generation == entry.key.generation:
                entry.checked_at = time.monotonic()
                return entry.key
        async with self._db.reading() as session:
            stored = await repo.load_key(session, name)
        if stored is None:
            self.invalidate(name)
            return None
        return self._remember(stored)

    def _build(self, stored: repo.StoredKey, previous: Key | None) -> Key:
        row = stored.row
        key_type = KEY_TYPES.get(row.type)
        if key_type is None:
            raise InternalError(f"key {row.name} has a type this server does not know")
        versions = {}
        for sv in stored.versions:
            # Versions never change once written: reuse the built crypto object when we have it.
            old = previous.versions.get(sv.version) if previous else None
            if old is not None:
                versions[sv.version] = old
                continue
            try:
                material = self._master_key.unseal(sv.sealed_material, key_material_aad(row.name, sv.version))
            except SealError:
                raise InternalError(f"key {row.name} version {sv.version} does not open with the master key") from None
            versions[sv.version] = KeyVersion(sv.version, sv.created_at, key_type.load(material))
        return Key(
            name=row.name,
            key_type=key_type,
            latest_version=row.latest_version,
            min_decryption_version=row.min_decryption_version,
            min_encryption_version=row.min_encryption_version,
            deletion_allowed=row.deletion_allowed,
            exportable=row.exportable,
            allow_plaintext_backup=row.allow_plaintext_backup,
            generation=row.generation,
            versions=versions,
        )

    def _new_version(
        self, name: str, key_type: str, version: int, now: datetime
    ) -> tuple[repo.StoredVersion, str | None]:
        kt = KEY_TYPES[key_type]
        material = kt.generate()
        sealed = self._master_key.seal(material, key_material_aad(name, version))
        public_key = kt.public_key_pem(kt.load(material))
        return repo.StoredVersion(version, sealed, self._master_key.key_id, now), public_key

    async def create(self, session: AsyncSession, name: str, key_type: str) -> int:
        now = utcnow()
        first, public_key = self._new_version(name, key_type, 1, now)
        row = await repo.create_key(session, name, key_type, now, first, public_key)
        log.info("created key %s (%s)", name, key_type)
        return row.id

    async def rotate(self, name: str) -> Key:
        """Add a version. Committed before this returns; concurrent rotations (any node) serialize on the
        key row, so versions stay contiguous. Returns the key as this rotation left it."""
        async with self._db.writing() as session:
            row = await repo.get_key(session, name, for_update=True)
            if row is None:
                raise InvalidRequest("key not found")
            now = utcnow()
            version, public_key = self._new_version(name, row.type, row.latest_version + 1, now)
            await repo.add_version(session, row, version, public_key)
            await repo.bump(session, row, now, latest_version=version.version)
            stored = await repo.load_key(session, name)
        log.info("rotated key %s to version %d", name, version.version)
        return self._remember(stored)

    def _remember(self, stored: repo.StoredKey) -> Key:
        """Cache a freshly read key, unless a concurrent writer already cached a newer generation."""
        entry = self._cache.get(stored.row.name)
        key = self._build(stored, entry.key if entry else None)
        if entry is None or entry.key.generation <= key.generation:
            self._cache[key.name] = _CachedKey(key, time.monotonic())
            return key
        return entry.key

    async def configure(self, name: str, change: KeyConfigChange) -> tuple[Key, list[str]]:
        warnings: list[str] = []
        async with self._db.writing() as session:
            row = await repo.get_key(session, name, for_update=True)
            if row is None:
                raise InvalidRequest(f"no existing key named {name} could be found")
            values: dict[str, Any] = {}
            min_dec = row.min_decryption_version
            if change.min_decryption_version is not None:
                min_dec = change.min_decryption_version
                if min_dec < 0:
                    raise InvalidRequest("min decryption version cannot be negative")
                if min_dec == 0:
                    min_dec = 1
                    warnings.append("transit key numbering starts at 1; forcing minimum to 1")
                if min_dec > row.latest_version:
                    raise InvalidRequest(
                        f"cannot set min decryption version of {min_dec}, latest key version is {row.latest_version}"
                    )
                values["min_decryption_version"] = min_dec
            min_enc = row.min_encryption_version
            if change.min_encryption_version is not None:
                min_enc = change.min_encryption_version
                if min_enc < 0:
                    raise InvalidRequest("min encryption version cannot be negative")
                if min_enc > row.latest_version:
                    raise InvalidRequest(
                        f"cannot set min encryption version of {min_enc}, latest key version is {row.latest_version}"
                    )
                values["min_encryption_version"] = min_enc
            if min_enc and min_enc < min_dec:
                raise InvalidRequest(
                    "cannot set min encryption/decryption values; min encryption version of "
                    f"{min_enc} must be greater than or equal to min decryption version of {min_dec}"
                )
            if change.deletion_allowed is not None:
                values["deletion_allowed"] = change.deletion_allowed
            # One-way flags: false is ignored, as in Vault.
            if change.exportable:
                values["exportable"] = True
            if change.allow_plaintext_backup:
                values["allow_plaintext_backup"] = True
            if values:
                await repo.bump(session, row, utcnow(), **values)
            stored = await repo.load_key(session, name)
        return self._remember(stored), warnings

    async def names(self) -> list[str]:
        async with self._db.reading() as session:
            return await repo.list_key_names(session)


# -- tokens -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Principal:
    """An authenticated caller."""

    token: str
    info: TokenInfo
    acl: ACL


@dataclass
class _CachedToken:
    principal: Principal | None  # None: no such token (cached too, to blunt guessing)
    checked_at: float


class TokenService:
    MAX_CACHED = 10_000

    def __init__(self, db: Database, master_key: MasterKey, cache_ttl: float) -> None:
        self._db = db
        self._hmac_key = master_key.subkey("kms-service token hmac")
        self._endpoint_key = master_key.subkey("kms-service endpoint token")
        self._cache_ttl = cache_ttl
        self._cache: OrderedDict[bytes, _CachedToken] = OrderedDict()
        self._loading = SingleFlight()

    def invalidate(self) -> None:
        self._cache.clear()

    def digest(self, token: str) -> bytes:
        return token_digest(self._hmac_key, token)

    async def authenticate(self, token: str | None) -> Principal | None:
        """The principal for a token, or None (unknown, expired or revoked: the caller says 403)."""
        if not token:
            return None
        digest = self.digest(token)
        entry = self._fresh(digest)
        if entry is None:
            async with self._loading(digest):
                entry = self._fresh(digest) or await self._lookup(token, digest)
        if entry.principal is None or entry.principal.info.expired(utcnow()):
            return None
        return entry.principal

    def _fresh(self, digest: bytes) -> _CachedToken | None:
        entry = self._cache.get(digest)
        if entry is None or time.monotonic() - entry.checked_at >= self._cache_ttl:
            return None
        return entry

    async def _lookup(self, token: str, digest: bytes) -> _CachedToken:
        async with self._db.reading() as session:
            record = await repo.find_token(session, digest)
        principal = None
        if record is not None:
            info = TokenInfo(
                record.accessor, record.policies, record.display_name, record.created_at, record.expires_at
            )
            principal = Principal(token, info, acl_for(record.policies))
        # Tokens are random, so none is created after being guessed: caching misses is safe.
        entry = _CachedToken(principal, time.monotonic())
        self._cache[digest] = entry
        self._cache.move_to_end(digest)
        while len(self._cache) > self.MAX_CACHED:
            self._cache.popitem(last=False)
        return entry

    async def create(
        self, policies: list[str], ttl: timedelta | None, display_name: str = "token"
    ) -> tuple[str, TokenInfo]:
        if not policies:
            raise InvalidRequest("at least one policy is required")
        for name in policies:
            parse_policy(name)
        token, accessor, now = new_token(), new_accessor(), utcnow()
        expires_at = now + ttl if ttl else None
        async with self._db.writing() as session:
            await repo.add_token(
                session,
                accessor=accessor,
                token_hmac=self.digest(token),
                display_name=display_name,
                created_at=now,
                expires_at=expires_at,
                policies=policies,
            )
        return token, TokenInfo(accessor, tuple(sorted(set(policies))), display_name, now, expires_at)

    async def endpoint_token(self, endpoint: str) -> tuple[str, datetime]:
        """The endpoint's current token, or a new one (valid one year) when it has under 30 days left."""
        async with self._db.writing() as session:
            await _serialize_writers(session)
            row = await repo.get_endpoint(session, endpoint)
            if row is None:
                raise ConfigError(f"endpoint '{endpoint}' is not in the service configuration")
            now = utcnow()
            current = await repo.newest_endpoint_token(session, row.id)
            if current is not None and current.expires_at - now > ENDPOINT_TOKEN_RENEW_WITHIN:
                return derived_token(self._endpoint_key, current.accessor), current.expires_at
            accessor = new_accessor()
            token = derived_token(self._endpoint_key, accessor)
            expires_at = now + ENDPOINT_TOKEN_TTL
            await repo.add_token(
                session,
                accessor=accessor,
                token_hmac=self.digest(token),
                display_name=f"endpoint-{endpoint}",
                created_at=now,
                expires_at=expires_at,
                endpoint_id=row.id,
            )
            log.info("issued a new token for endpoint %s (accessor %s)", endpoint, accessor)
            return token, expires_at

    async def revoke(self, value: str) -> bool:
        """Revoke by accessor or by the token itself."""
        async with self._db.writing() as session:
            if ACCESSOR_RE.fullmatch(value):
                deleted = await repo.delete_token(session, accessor=value)
            elif looks_like_token(value):
                deleted = await repo.delete_token(session, token_hmac=self.digest(value))
            else:
                raise InvalidRequest("not a token or an accessor")
        self.invalidate()
        return deleted

    async def list(self) -> list[repo.TokenRecord]:
        async with self._db.reading() as session:
            return await repo.list_tokens(session)

    async def reap(self) -> int:
        async with self._db.writing() as session:
            count = await repo.delete_expired_tokens(session, utcnow())
        if count:
            log.info("reaped %d expired token(s)", count)
        return count


# -- the whole service ----------------------------------------------------------------------------------


class KMS:
    """The service's state: database, master key, keys and tokens. Built by ``open``, ended by ``close``."""

    def __init__(self, engine: AsyncEngine, master_key: MasterKey, cache_ttl: float) -> None:
        self.engine = engine
        self.db = Database(engine)
        self.master_key = master_key
        self.keys = KeyService(self.db, master_key, cache_ttl)
        self.tokens = TokenService(self.db, master_key, cache_ttl)
        self.service: ServiceConfig | None = None

    @classmethod
    async def open(
        cls,
        database_url: str,
        data_dir: Path,
        cache_ttl: float = DEFAULT_CACHE_TTL,
        master_key: MasterKey | None = None,
    ) -> KMS:
        """Migrate the database and check the master key against it; refuse to start on a mismatch."""
        engine = create_engine(database_url)
        try:
            await migrate.upgrade(engine)
            kms = cls(engine, master_key or MasterKey.load(data_dir), cache_ttl)
            await kms._check_master_key()
        except BaseException:
            await engine.dispose()
            raise
        return kms

    async def close(self) -> None:
        await self.engine.dispose()

    async def _check_master_key(self) -> None:
        async with self.db.writing() as session:
            row = await repo.get_seal_check(session)
            if row is None:
                sealed = self.master_key.seal(SEAL_CHECK_PLAINTEXT, SEAL_CHECK_AAD)
                await repo.add_seal_check(session, self.master_key.key_id, sealed, utcnow())
                return
        try:
            ok = self.master_key.unseal(row.sealed_value, SEAL_CHECK_AAD) == SEAL_CHECK_PLAINTEXT
        except SealError:
            ok = False
        if not ok:
            raise SealError(
                f"the master key (id {self.master_key.key_id}) does not open this database, which was "
                f"sealed with master key id {row.master_key_id}: set KMS_MASTER_KEY or <data-dir>/master.key "
                "to that key"
            )

    async def provision(self, config: ServiceConfig) -> None:
        """Make keys, endpoints and grants match the configuration. Idempotent; refuses a type change."""
        async with self.db.writing() as session:
            await _serialize_writers(session)
            key_ids = {}
            for name, key_type in config.keys().items():
                row = await repo.get_key(session, name)
                if row is None:
                    key_ids[name] = await self.keys.create(session, name, key_type)
                elif row.type != key_type:
                    raise ConfigError(_type_change_message(name, row.type, key_type))
                else:
                    key_ids[name] = row.id
            endpoints = {
                endpoint: [(grant.policy, grant.key) for grant in grants]
                for endpoint, grants in config.endpoints.items()
            }
            await repo.sync_endpoints(session, endpoints, key_ids, utcnow())
        self.service = config
        self.keys.invalidate()
        self.tokens.invalidate()


def _type_change_message(name: str, stored: str, wanted: str) -> str:
    by_key_type = {v: k for k, v in GRANT_KEY_TYPES.items()}
    return (
        f"key '{name}' already exists with type '{by_key_type.get(stored, stored)}' ({stored}); the "
        f"configuration now gives type '{by_key_type.get(wanted, wanted)}' ({wanted}). A key's type can never change: "
        "restore the old type, or use a new key name"
    )
