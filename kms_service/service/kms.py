"""The whole service: opens the database, unlocks it with the master key, and holds keys, tokens and
policies. ``KMS.open`` and ``close`` are its lifecycle; ``web.app.create_app`` calls them from one of the
``ServiceApp``'s ``cleanup_ctx`` contexts (run by its ``startup`` and ``cleanup``) and the CLI's commands
through ``KMS.session``."""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.ext.asyncio import AsyncEngine

from kms_service.acl import policy_name
from kms_service.audit_records import AuditKeys
from kms_service.config import GRANT_KEY_TYPES, ServiceConfig
from kms_service.errors import ConfigError, DatabaseUnavailable, SealError
from kms_service.keyring import KeySettings
from kms_service.seal import (
    MASTER_KEY_ENV,
    MASTER_KEY_FILE,
    SEAL_CHECK_AAD,
    SEAL_CHECK_PLAINTEXT,
    MasterKey,
    MasterKeyring,
    ServerSecrets,
    server_secret_aad,
)
from kms_service.service import provisioning
from kms_service.service.caching import CacheStats
from kms_service.service.cluster import (
    PgCluster,
    PgNotify,
    SqliteChangeLog,
    SqliteJobLock,
    SqlitePoller,
    new_node_id,
)
from kms_service.service.database_watch import DatabaseWatch
from kms_service.service.invalidation import Change, Invalidator, Kind
from kms_service.service.keys import KeyService
from kms_service.service.master_keys import MasterKeys
from kms_service.service.mounts import MountService
from kms_service.service.namespaces import NamespaceService
from kms_service.service.policies import PolicyService
from kms_service.service.response_wrapping import ResponseWrapping
from kms_service.service.tokens import TokenService
from kms_service.service.usage import UsageCounter
from kms_service.service.wrapping import WrappingKeyService
from kms_service.settings import Settings
from kms_service.storage import migrate, revisions
from kms_service.storage import repository as repo
from kms_service.storage.database import Database, create_engine, normalize_database_url

log = logging.getLogger(__name__)


def utcnow() -> datetime:
    return datetime.now(UTC)


class KMS:
    """The service's state. Built by ``open`` (migrate, unlock, upgrade stored material), ended by ``close``."""

    def __init__(
        self, engine: AsyncEngine, master_key: MasterKeyring, secrets: ServerSecrets, settings: Settings
    ) -> None:
        self.engine = engine
        self.settings = settings
        self.invalidator = Invalidator()
        self.node_id = new_node_id()
        self.started_at = datetime.now(UTC)
        # Every write (CLI commands' too) tells the other nodes as it commits: PostgreSQL's NOTIFY, or a row
        # in SQLite's change log for the other processes on the file. A serving node also listens
        # (``start_cluster``).
        self.cluster: PgCluster | SqlitePoller | None = None
        # On a SQLite file, the background jobs run in the one process holding its lock file.
        database = engine.url.database
        self.job_lock = (
            SqliteJobLock(database)
            if engine.dialect.name != "postgresql" and database not in (None, "", ":memory:")
            else None
        )
        if engine.dialect.name == "postgresql":
            self.invalidator.transports.append(PgNotify(self.node_id))
        else:
            self.invalidator.transports.append(SqliteChangeLog(self.node_id))
        # A serving node notices the database going away, serves what it holds for --stale-while-down, and
        # refuses the rest at once (``start_cluster`` starts it; CLI commands never do).
        self.watch = DatabaseWatch(engine, self.invalidator, settings.stale_while_down)
        self.db = Database(
            engine,
            on_commit=self.invalidator.publish,
            before_commit=self.invalidator.before_commit,
            gate=self.watch.check,
        )
        # Every part seals and opens through this one keyring, so a master-key rotation reaches them all.
        self.master_key = master_key
        self.master_keys = MasterKeys(self.db, master_key)
        self.cluster_id = secrets.cluster_id
        self.audit_keys = AuditKeys(secrets.audit_key)
        # Every key cache's hits and misses, in one place for the metrics.
        self.key_cache_stats = CacheStats()
        self.mounts = MountService(
            self.db,
            master_key,
            settings.cache_ttl,
            self.invalidator,
            cache_stats=self.key_cache_stats,
            watch=self.watch,
        )
        self.namespaces = NamespaceService(self.db, self.mounts)
        self.policies = PolicyService(self.db, self.invalidator)
        self.tokens = TokenService(
            self.db,
            secrets,
            self.policies,
            settings.cache_ttl,
            self.invalidator,
            settings.max_token_ttl,
            watch=self.watch,
            default_ttl=settings.default_token_ttl,
        )
        self.wrapping = WrappingKeyService(self.db, master_key)
        # Vault's response wrapping (X-Vault-Wrap-TTL, sys/wrapping/*), not to be confused with the key above.
        self.wrapped_responses = ResponseWrapping(self.db, master_key, secrets)
        self.usage = UsageCounter(self.db, settings.nonce_warning_at, settings.nonce_rotation_at, watch=self.watch)
        self.service: ServiceConfig | None = None
        # Errors the database raised, by SQLAlchemy's class for them (OperationalError, IntegrityError, ...:
        # the same names on both databases), for the metrics endpoint.
        self.database_errors: Counter[str] = Counter()
        event.listen(engine.sync_engine, "handle_error", self._on_database_error)

    def _on_database_error(self, context: Any) -> None:
        error = context.sqlalchemy_exception or context.original_exception
        self.database_errors[type(error).__name__] += 1
        if not context.is_pre_ping:  # a failed pre-ping is followed by a fresh connection: not yet an outage
            self.watch.noticed(error)

    @classmethod
    async def open(cls, settings: Settings, create: bool = True) -> KMS:
        """Migrate the database, check the master key against it, load the server's secrets, upgrade old
        key material; refuse to start on a mismatch. Then provision ``settings.service`` if given.

        ``create=False`` (commands other than serve and migrate): a database that does not exist is refused,
        never made. Either way, a database already sealed under a master key never gets a new one."""
        engine = create_engine(settings.url, create=create, lock_timeout=settings.database_lock_timeout)
        try:
            before = await migrate.current_revision(engine)
            if not create and before is None:
                raise ConfigError(
                    f"no kms-service database at {safe_url(settings.url)}: check --data-dir / --database-url "
                    "(only 'serve' and 'migrate' create one)"
                )
            if settings.prepared:
                if not await migrate.is_current(engine):
                    raise ConfigError("the database schema changed under this worker; restart the service")
            else:
                await migrate.upgrade(engine)
            after = await migrate.current_revision(engine)
            if after != before:
                log.info("database schema: revision %s → %s", before or "(new database)", after)
            async with Database(engine).reading() as session:
                sealed_with = await repo.seal_check_ids(session)
            master_key = settings.master_key or _load_master_key(settings, sealed_with)
            check_permissions(settings, strict=settings.strict_permissions)
            if master_key.created_file is not None:
                log.warning(
                    "created a new master key at %s. Back it up now, somewhere other than this machine: every key "
                    "in the database is sealed under it, and without it they are lost. To run in a container, "
                    "set KMS_MASTER_KEY to the file's content (base64) instead of keeping the file.",
                    master_key.created_file,
                )
            keyring = MasterKeyring(master_key)
            secrets = await _unlock(Database(engine), keyring)
            kms = cls(engine, keyring, secrets, settings)
            await kms.mounts.load()
            if settings.prepared:  # the parent process did both (serve --workers)
                kms.service = settings.service
            else:
                await kms.keys.upgrade_legacy_material()
                await kms.policies.ensure_default()
                if settings.service is not None:
                    await kms.provision(settings.service, prune=settings.prune)
        except BaseException:
            await engine.dispose()
            raise
        return kms

    async def start_cluster(self) -> None:
        """For a serving node: hear other nodes' (or processes') changes at once; on PostgreSQL also take part
        in choosing which node runs each background job."""
        if self.cluster is not None:
            return
        await self.watch.start()
        if self.engine.dialect.name == "postgresql":
            self.cluster = PgCluster(
                self.engine,
                self.invalidator,
                self.node_id,
                on_unreachable=self.watch.failed,
                on_hearing=self.watch.hearing,
            )
            self.watch.on_back = self.cluster.reconnect_now
        elif self.engine.url.database not in (None, "", ":memory:"):  # an in-memory database has one process
            self.cluster = SqlitePoller(self.engine, self.invalidator, self.node_id)
        else:
            return
        await self.cluster.start()

    async def leads(self, job: str) -> bool:
        """Whether this node runs background ``job`` now: one node on PostgreSQL (an advisory lock), one
        process on a SQLite file (a lock file), always on an in-memory database."""
        if self.engine.dialect.name != "postgresql":
            return self.job_lock is None or self.job_lock.leads(job)
        return isinstance(self.cluster, PgCluster) and await self.cluster.leads(job)

    async def close(self) -> None:
        try:
            await self.usage.flush(idle_for=0)  # give back every unused reservation: stored counts exact
        except DatabaseUnavailable:
            log.warning(
                "stopping during a database outage: unused usage reservations stay counted, and uses answered "
                "on credit meanwhile are not stored"
            )
        except Exception:
            log.exception("could not give back unused usage reservations; the stored counts stay high")
        await self.tokens.stop_refreshing()
        await self.mounts.stop_refreshing()
        if self.cluster is not None:
            await self.cluster.stop()
            self.cluster = None
        await self.watch.stop()
        if self.job_lock is not None:
            self.job_lock.release()
        await self.engine.dispose()

    @classmethod
    @asynccontextmanager
    async def session(cls, settings: Settings, create: bool = True) -> AsyncIterator[KMS]:
        kms = await cls.open(settings, create=create)
        try:
            yield kms
        finally:
            await kms.close()

    @property
    def keys(self) -> KeyService:
        """The keys of transit/, where the services YAML's keys live."""
        return self.mounts.default

    async def provision(self, config: ServiceConfig, prune: bool = False) -> None:
        """Make keys, endpoints and their policies match the configuration. Idempotent; refuses a type change,
        and refuses to remove an endpoint the configuration no longer names unless ``prune``."""
        wanted = config.keys()
        transit = self.keys
        mount_id = transit.mount.id
        async with self.db.reading() as session:
            missing = {
                name: kt for name, kt in wanted.items() if await repo.key_type_of(session, mount_id, name) is None
            }
        # Material is made before the write transaction: generation can be slow and must not hold the lock.
        materials = {name: await transit.generate(kt) for name, kt in missing.items()}
        async with self.db.writing() as session:
            await repo.serialize_writers(session)
            changes = await provisioning.plan(session, config)
            if changes.endpoints_to_remove:
                if not prune:
                    raise ConfigError(changes.removal_refusal("the services YAML"))
                log.warning(
                    "--prune: removing endpoint(s) %s and their %d token(s)",
                    ", ".join(sorted(changes.endpoints_to_remove)),
                    sum(changes.endpoints_to_remove.values()),
                )
            now = utcnow()
            key_ids = {}
            for name, key_type in wanted.items():
                row = await repo.get_key(session, mount_id, name)
                if row is None:
                    material = materials.get(name) or await transit.generate(key_type)
                    key_ids[name] = await transit.create(session, name, key_type, material, KeySettings())
                elif row.type != key_type:
                    raise ConfigError(_type_change_message(name, row.type, key_type))
                else:
                    key_ids[name] = row.id
            endpoints = {}
            for endpoint, grants in config.endpoints.items():
                endpoints[endpoint] = [
                    await repo.ensure_template_policy(
                        session, policy_name(grant.policy, grant.key), grant.policy, key_ids[grant.key], now
                    )
                    for grant in grants
                ]
            if await repo.sync_endpoints(session, endpoints, now):
                self.db.changed(session, Change(Kind.ENDPOINT))
        self.service = config


def safe_url(url: str) -> str:
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "(an invalid URL)"


def _load_master_key(settings: Settings, sealed_with: list[str]) -> MasterKey:
    """The master key; a new one only for a database no master key has sealed yet."""
    try:
        return MasterKey.load(settings.data_dir, create=not sealed_with)
    except SealError as exc:
        if not sealed_with or not exc.message.startswith("no master key"):
            raise
        # A missing file is as often a wrong --data-dir (a relative one, from another directory; PostgreSQL's
        # database is found whatever the directory) as a lost key: say both, with the directory looked in.
        data_dir = Path(settings.data_dir).absolute()
        raise SealError(
            f"no master.key in {data_dir} ({MASTER_KEY_ENV} is unset), but the database at "
            f"{safe_url(settings.url)} is sealed with master key id {', '.join(sealed_with)}: if the database is "
            f"{data_dir}'s, restore its master.key from your backup (or set {MASTER_KEY_ENV}); if you "
            "meant another --data-dir, pass it. A new key cannot open the database"
        ) from None


def _group_or_other_readable(path: Path) -> bool:
    try:
        return bool(path.stat().st_mode & 0o077)
    except FileNotFoundError:
        return False


def check_permissions(settings: Settings, strict: bool = False) -> list[Path]:
    """master.key and the SQLite files must be the owner's alone: others are warned of (an error when
    ``strict``). Returns the files at fault."""
    files = []
    if not (settings.master_key or os.environ.get(MASTER_KEY_ENV)):
        files.append(Path(settings.data_dir) / MASTER_KEY_FILE)
    url = make_url(normalize_database_url(settings.url))
    if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
        database = Path(url.database)
        files += [database, database.with_name(database.name + "-wal"), database.with_name(database.name + "-shm")]
    loose = [path for path in files if _group_or_other_readable(path)]
    if loose:
        message = (
            f"{', '.join(map(str, loose))}: readable or writable by group or others; "
            f"'chmod 600' {'them' if len(loose) > 1 else 'it'} (only the service's user needs access)"
        )
        if strict:
            raise SealError(message + " (refused: --strict-permissions)")
        log.warning("%s", message)
    return loose


async def open_database(settings: Settings) -> Database:
    """The database for a command that only reads: never created, never migrated, no master key needed."""
    return await revisions.open_existing(settings.url)


async def _unlock(db: Database, keyring: MasterKeyring) -> ServerSecrets:
    """Check the master key against the database and unseal the server's secrets, creating what is missing.

    A new database records a check value for this master key and random secrets. A database made before
    the keyring existed gets the secrets that release derived from the master key, so its tokens keep
    working. Several rows of ``seal_check`` may exist during a master-key rollover; this key needs its own,
    and the keyring gets the other key of the rollover (``MasterKeys.follow``).
    """
    master_key = keyring.loaded
    async with db.writing() as session:
        await repo.serialize_writers(session)
        now = utcnow()
        known = await repo.seal_check_ids(session)
        new_database = not known
        if new_database:
            await repo.add_seal_check(
                session, master_key.key_id, master_key.seal(SEAL_CHECK_PLAINTEXT, SEAL_CHECK_AAD), now
            )
        else:
            row = await repo.get_seal_check(session, master_key.key_id)
            try:
                ok = row is not None and master_key.unseal(row.sealed_value, SEAL_CHECK_AAD) == SEAL_CHECK_PLAINTEXT
            except SealError:
                ok = False
            if not ok:
                raise SealError(
                    f"the master key (id {master_key.key_id}) does not open this database, which was sealed with "
                    f"master key id {', '.join(known)}: set KMS_MASTER_KEY or <data-dir>/master.key to that key"
                )
            MasterKeys(db, keyring).follow(await repo.get_rollover(session), set(known))
        values = {}
        for secret in await repo.server_secrets(session):
            try:
                values[secret.name] = keyring.unseal(secret.sealed_value, server_secret_aad(secret.name))
            except SealError:
                raise SealError(
                    f"server secret '{secret.name}' does not open with master key {master_key.key_id}"
                ) from None
        fresh = ServerSecrets.generate()
        for name, value in fresh.items():
            if name in values:
                continue
            purpose = ServerSecrets.LEGACY_PURPOSES.get(name)
            if not new_database and purpose is not None:
                value = master_key.legacy_subkey(purpose)
            await repo.add_server_secret(
                session, name, keyring.seal(value, server_secret_aad(name)), keyring.key_id, now
            )
            values[name] = value
    return ServerSecrets.from_values(values)


def _type_change_message(name: str, stored: str, wanted: str) -> str:
    by_key_type = {v: k for k, v in GRANT_KEY_TYPES.items()}
    return (
        f"key '{name}' already exists with type '{by_key_type.get(stored, stored)}' ({stored}); the "
        f"configuration now gives type '{by_key_type.get(wanted, wanted)}' ({wanted}). A key's type can never change: "
        "restore the old type, or use a new key name"
    )
