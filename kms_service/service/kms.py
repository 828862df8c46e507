"""The whole service: opens the database, unlocks it with the master key, and holds keys, tokens and
policies. ``KMS.open`` and ``close`` are its lifecycle; ``web.app.create_app`` calls them from aiohttp's
``cleanup_ctx`` and the CLI's commands through ``KMS.session``."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.ext.asyncio import AsyncEngine

from kms_service.acl import policy_name
from kms_service.config import GRANT_KEY_TYPES, ServiceConfig
from kms_service.errors import ConfigError, InternalError, SealError
from kms_service.keyring import KeySettings
from kms_service.seal import (
    MASTER_KEY_ENV,
    MASTER_KEY_FILE,
    SEAL_CHECK_AAD,
    SEAL_CHECK_PLAINTEXT,
    MasterKey,
    ServerSecrets,
    server_secret_aad,
)
from kms_service.service import provisioning
from kms_service.service.invalidation import Change, Invalidator, Kind
from kms_service.service.keys import KeyService
from kms_service.service.policies import PolicyService
from kms_service.service.tokens import TokenService
from kms_service.service.wrapping import WrappingKeyService
from kms_service.settings import Settings
from kms_service.storage import migrate
from kms_service.storage import repository as repo
from kms_service.storage.engine import Database, create_engine, normalize_database_url

log = logging.getLogger(__name__)


# The transit engine's settings and Vault's defaults: config/keys disable_upsert, cache-config size.
ENGINE_DEFAULTS: dict[str, Any] = {"disable_upsert": False, "cache_size": 0}


def utcnow() -> datetime:
    return datetime.now(UTC)


class KMS:
    """The service's state. Built by ``open`` (migrate, unlock, upgrade stored material), ended by ``close``."""

    def __init__(self, engine: AsyncEngine, master_key: MasterKey, secrets: ServerSecrets, settings: Settings) -> None:
        self.engine = engine
        self.settings = settings
        self.invalidator = Invalidator()
        self.db = Database(engine, on_commit=self.invalidator.publish, before_commit=self.invalidator.before_commit)
        self.master_key = master_key
        self.cluster_id = secrets.cluster_id
        self.keys = KeyService(self.db, master_key, settings.cache_ttl, self.invalidator)
        self.policies = PolicyService(self.db, self.invalidator)
        self.tokens = TokenService(
            self.db, secrets, self.policies, settings.cache_ttl, self.invalidator, settings.max_token_ttl
        )
        self.wrapping = WrappingKeyService(self.db, master_key)
        self.service: ServiceConfig | None = None

    @classmethod
    async def open(cls, settings: Settings, create: bool = True) -> KMS:
        """Migrate the database, check the master key against it, load the server's secrets, upgrade old
        key material; refuse to start on a mismatch. Then provision ``settings.service`` if given.

        ``create=False`` (commands other than serve and migrate): a database that does not exist is refused,
        never made. Either way, a database already sealed under a master key never gets a new one."""
        engine = create_engine(settings.url, create=create)
        try:
            before = await migrate.current_revision(engine)
            if not create and before is None:
                raise ConfigError(
                    f"no kms-service database at {safe_url(settings.url)}: check --data-dir / --database-url "
                    "(only 'serve' and 'migrate' create one)"
                )
            await migrate.upgrade(engine)
            after = await migrate.current_revision(engine)
            if after != before:
                log.info("database schema: revision %s → %s", before or "(new database)", after)
            async with Database(engine).reading() as session:
                sealed_with = await repo.seal_check_ids(session)
            master_key = settings.master_key or _load_master_key(settings, sealed_with)
            check_permissions(settings, strict=settings.strict_permissions)
            secrets = await _unlock(Database(engine), master_key)
            kms = cls(engine, master_key, secrets, settings)
            await kms.keys.upgrade_legacy_material()
            if settings.service is not None:
                await kms.provision(settings.service, prune=settings.prune)
        except BaseException:
            await engine.dispose()
            raise
        return kms

    async def close(self) -> None:
        await self.engine.dispose()

    @classmethod
    @asynccontextmanager
    async def session(cls, settings: Settings, create: bool = True) -> AsyncIterator[KMS]:
        kms = await cls.open(settings, create=create)
        try:
            yield kms
        finally:
            await kms.close()

    async def engine_settings(self) -> dict[str, Any]:
        """The transit engine's settings (config/keys, cache-config), Vault's defaults for what is unset."""
        async with self.db.reading() as session:
            stored = await repo.engine_settings(session)
        return {**ENGINE_DEFAULTS, **{name: json.loads(value) for name, value in stored.items()}}

    async def set_engine_settings(self, **values: Any) -> dict[str, Any]:
        async with self.db.writing() as session:
            for name, value in values.items():
                if name not in ENGINE_DEFAULTS:
                    raise InternalError(f"unknown engine setting {name}")
                await repo.put_engine_setting(session, name, json.dumps(value), utcnow())
        return await self.engine_settings()

    async def provision(self, config: ServiceConfig, prune: bool = False) -> None:
        """Make keys, endpoints and their policies match the configuration. Idempotent; refuses a type change,
        and refuses to remove an endpoint the configuration no longer names unless ``prune``."""
        wanted = config.keys()
        async with self.db.reading() as session:
            missing = {name: kt for name, kt in wanted.items() if await repo.key_type_of(session, name) is None}
        # Material is made before the write transaction: generation can be slow and must not hold the lock.
        materials = {name: await self.keys.generate(kt) for name, kt in missing.items()}
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
                row = await repo.get_key(session, name)
                if row is None:
                    material = materials.get(name) or await self.keys.generate(key_type)
                    key_ids[name] = await self.keys.create(session, name, key_type, material, KeySettings())
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
        raise SealError(
            f"no master key ({MASTER_KEY_ENV} is unset and {Path(settings.data_dir) / MASTER_KEY_FILE} does not "
            f"exist), but the database at {safe_url(settings.url)} is sealed with master key id "
            f"{', '.join(sealed_with)}: restore that master.key from your backup (or set {MASTER_KEY_ENV}); "
            "a new key cannot open it"
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
    engine = create_engine(settings.url, create=False)
    try:
        if not await migrate.is_current(engine):
            raise ConfigError("the database schema is not at this release's revision: run 'kms-service migrate' first")
    except BaseException:
        await engine.dispose()
        raise
    return Database(engine)


async def _unlock(db: Database, master_key: MasterKey) -> ServerSecrets:
    """Check the master key against the database and unseal the server's secrets, creating what is missing.

    A new database records a check value for this master key and random secrets. A database made before
    the keyring existed gets the secrets that release derived from the master key, so its tokens keep
    working. Several rows of ``seal_check`` may exist during a master-key rollover; this key needs its own.
    """
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
        values = {}
        for secret in await repo.server_secrets(session):
            try:
                values[secret.name] = master_key.unseal(secret.sealed_value, server_secret_aad(secret.name))
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
                session, name, master_key.seal(value, server_secret_aad(name)), master_key.key_id, now
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
