"""The only module that writes SQL. Services call these functions inside a transaction they own.

Lookups return ``None`` when nothing is found; nothing here knows about HTTP or caching. Key settings map
to ``keys`` columns by name (``KeySettings`` fields), so a new setting needs no code here.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import bindparam, delete, func, select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from kms_service.keyring import KeySettings
from kms_service.storage import models as m


@dataclass(frozen=True)
class StoredVersion:
    version: int
    sealed_material: bytes
    material_format: int
    master_key_id: str
    created_at: datetime


@dataclass(frozen=True)
class StoredKey:
    row: m.Key
    versions: tuple[StoredVersion, ...]

    @property
    def settings(self) -> KeySettings:
        return key_settings(self.row)


def key_settings(row: m.Key) -> KeySettings:
    return KeySettings(**{name: getattr(row, name) for name in KeySettings.names()})


# Any constant: nodes sharing one PostgreSQL take turns provisioning and unlocking it.
PROVISION_LOCK_ID = 0x6B6D735F70726F76


async def serialize_writers(session: AsyncSession) -> None:
    """Nodes sharing PostgreSQL provision one at a time (SQLite's BEGIN IMMEDIATE already does this)."""
    if session.bind.dialect.name == "postgresql":
        await session.execute(text(f"SELECT pg_advisory_xact_lock({PROVISION_LOCK_ID})"))


# -- keys ---------------------------------------------------------------------------------------------


async def get_key(session: AsyncSession, mount_id: int, name: str, for_update: bool = False) -> m.Key | None:
    query = select(m.Key).where(m.Key.mount_id == mount_id, m.Key.name == name)
    if for_update:
        # PostgreSQL row lock; SQLite already holds the database write lock (BEGIN IMMEDIATE).
        query = query.with_for_update()
    return (await session.execute(query)).scalar_one_or_none()


async def key_type_of(session: AsyncSession, mount_id: int, name: str) -> str | None:
    query = select(m.Key.type).where(m.Key.mount_id == mount_id, m.Key.name == name)
    return (await session.execute(query)).scalar_one_or_none()


async def load_key(session: AsyncSession, mount_id: int, name: str) -> StoredKey | None:
    row = await get_key(session, mount_id, name)
    if row is None:
        return None
    result = await session.execute(
        select(m.KeyVersion)
        .where(m.KeyVersion.key_id == row.id, m.KeyVersion.version >= row.min_available_version)
        .order_by(m.KeyVersion.version)
    )
    versions = tuple(
        StoredVersion(v.version, v.sealed_material, v.material_format, v.master_key_id, v.created_at)
        for v in result.scalars()
    )
    return StoredKey(row, versions)


async def key_generation(session: AsyncSession, mount_id: int, name: str) -> int | None:
    query = select(m.Key.generation).where(m.Key.mount_id == mount_id, m.Key.name == name)
    return (await session.execute(query)).scalar_one_or_none()


async def list_key_names(session: AsyncSession, mount_id: int) -> list[str]:
    query = select(m.Key.name).where(m.Key.mount_id == mount_id).order_by(m.Key.name)
    return list((await session.execute(query)).scalars())


async def list_key_metadata(session: AsyncSession, mount_id: int) -> list[tuple[str, dict[str, str]]]:
    query = select(m.Key.name, m.Key.custom_metadata).where(m.Key.mount_id == mount_id).order_by(m.Key.name)
    return [(name, labels) for name, labels in await session.execute(query)]


async def create_key(
    session: AsyncSession,
    mount_id: int,
    name: str,
    key_type: str,
    now: datetime,
    first_version: StoredVersion,
    public_key: str | None,
    settings: KeySettings | None = None,
    source: str = "services-yaml",
) -> m.Key:
    settings = settings or KeySettings()
    row = m.Key(
        mount_id=mount_id,
        name=name,
        type=key_type,
        source=source,
        latest_version=1,
        generation=1,
        created_at=now,
        updated_at=now,
        **{field: getattr(settings, field) for field in KeySettings.names()},
    )
    session.add(row)
    await session.flush()
    await add_version(session, row, first_version, public_key)
    return row


async def add_version(session: AsyncSession, row: m.Key, version: StoredVersion, public_key: str | None) -> None:
    session.add(
        m.KeyVersion(
            key_id=row.id,
            version=version.version,
            sealed_material=version.sealed_material,
            material_format=version.material_format,
            master_key_id=version.master_key_id,
            public_key=public_key,
            created_at=version.created_at,
        )
    )
    await session.flush()


async def bump(session: AsyncSession, row: m.Key, now: datetime, **changes) -> None:
    """Apply ``changes`` to the key row and bump its generation, in one UPDATE."""
    values = dict(changes, generation=m.Key.generation + 1, updated_at=now)
    await session.execute(update(m.Key).where(m.Key.id == row.id).values(**values))
    await session.refresh(row)


async def save_settings(session: AsyncSession, row: m.Key, settings: KeySettings, now: datetime) -> bool:
    """Store the settings that differ from the row's; False (and no write) when nothing changed."""
    changes = {
        name: getattr(settings, name) for name in KeySettings.names() if getattr(row, name) != getattr(settings, name)
    }
    if not changes:
        return False
    await bump(session, row, now, **changes)
    return True


async def delete_key(session: AsyncSession, row: m.Key) -> None:
    """The key, its versions and its built-in policies (cascade)."""
    await session.execute(delete(m.Key).where(m.Key.id == row.id))


async def get_version(session: AsyncSession, row: m.Key, version: int) -> StoredVersion | None:
    v = (
        await session.execute(
            select(m.KeyVersion).where(m.KeyVersion.key_id == row.id, m.KeyVersion.version == version)
        )
    ).scalar_one_or_none()
    return (
        None
        if v is None
        else StoredVersion(v.version, v.sealed_material, v.material_format, v.master_key_id, v.created_at)
    )


async def delete_versions(session: AsyncSession, row: m.Key) -> None:
    await session.execute(delete(m.KeyVersion).where(m.KeyVersion.key_id == row.id))


async def delete_versions_below(session: AsyncSession, row: m.Key, version: int) -> int:
    result = await session.execute(
        delete(m.KeyVersion).where(m.KeyVersion.key_id == row.id, m.KeyVersion.version < version)
    )
    return result.rowcount


@dataclass(frozen=True)
class RotationCandidate:
    mount_id: int
    name: str
    auto_rotate_period: int
    latest_created_at: datetime


async def keys_with_auto_rotation(session: AsyncSession) -> list[RotationCandidate]:
    """Keys with an auto_rotate_period, with their latest version's creation time."""
    rows = await session.execute(
        select(m.Key.mount_id, m.Key.name, m.Key.auto_rotate_period, m.KeyVersion.created_at)
        .join(m.KeyVersion, (m.KeyVersion.key_id == m.Key.id) & (m.KeyVersion.version == m.Key.latest_version))
        .where(m.Key.auto_rotate_period > 0)
        .order_by(m.Key.mount_id, m.Key.name)
    )
    return [RotationCandidate(*row) for row in rows]


async def latest_version_created_at(session: AsyncSession, row: m.Key) -> datetime:
    query = select(m.KeyVersion.created_at).where(
        m.KeyVersion.key_id == row.id, m.KeyVersion.version == row.latest_version
    )
    return (await session.execute(query)).scalar_one()


async def key_sources(session: AsyncSession) -> dict[str, int]:
    rows = await session.execute(select(m.Key.source, func.count()).group_by(m.Key.source))
    return {source: count for source, count in rows}


# -- usage counters -----------------------------------------------------------------------------------

USAGE_COUNTS = ("encryptions", "signatures")


async def reserve_usage(session: AsyncSession, key_id: int, version: int, count: str, block: int, now: datetime) -> int:
    """Add a reserved ``block`` to one count (the row is made on first use); the new total. One statement."""
    if count not in USAGE_COUNTS or block <= 0:
        raise ValueError(count)
    column = getattr(m.KeyVersionUsage, count)
    values = {"key_id": key_id, "version": version, count: block, "last_used_at": now}
    updates = {count: column + block, "last_used_at": now}
    insert = pg_insert if session.bind.dialect.name == "postgresql" else sqlite_insert
    statement = (
        insert(m.KeyVersionUsage)
        .values(**values)
        .on_conflict_do_update(index_elements=["key_id", "version"], set_=updates)
        .returning(column)
    )
    return (await session.execute(statement)).scalar_one()


async def give_back_usage(
    session: AsyncSession, key_id: int, version: int, count: str, unused: int, last_used_at: datetime
) -> None:
    """Return the unused part of reservations (the version may be gone since: then nothing happens)."""
    if count not in USAGE_COUNTS or unused < 0:
        raise ValueError(count)
    column = getattr(m.KeyVersionUsage, count)
    await session.execute(
        update(m.KeyVersionUsage)
        .where(m.KeyVersionUsage.key_id == key_id, m.KeyVersionUsage.version == version)
        .values({count: column - unused, "last_used_at": last_used_at})
    )


async def usage_of(session: AsyncSession, key_id: int) -> list[m.KeyVersionUsage]:
    query = select(m.KeyVersionUsage).where(m.KeyVersionUsage.key_id == key_id).order_by(m.KeyVersionUsage.version)
    return list((await session.execute(query)).scalars())


# -- mounts -------------------------------------------------------------------------------------------


async def list_mounts(session: AsyncSession) -> list[m.Mount]:
    return list((await session.execute(select(m.Mount).order_by(m.Mount.path))).scalars())


async def get_mount(session: AsyncSession, path: str, for_update: bool = False) -> m.Mount | None:
    query = select(m.Mount).where(m.Mount.path == path)
    if for_update:
        query = query.with_for_update()
    return (await session.execute(query)).scalar_one_or_none()


async def add_mount(session: AsyncSession, row: m.Mount) -> m.Mount:
    session.add(row)
    await session.flush()
    return row


async def keys_in_mount(session: AsyncSession, mount_id: int) -> list[m.Key]:
    """Every key of a mount, locked (PostgreSQL) so none changes while the mount goes."""
    query = select(m.Key).where(m.Key.mount_id == mount_id).order_by(m.Key.name).with_for_update()
    return list((await session.execute(query)).scalars())


async def delete_mount(session: AsyncSession, mount_id: int) -> None:
    """The mount and its settings (cascade); its keys must be gone first (RESTRICT)."""
    await session.execute(delete(m.Mount).where(m.Mount.id == mount_id))


# -- each mount's own settings --------------------------------------------------------------------------


async def engine_settings(session: AsyncSession, mount_id: int) -> dict[str, str]:
    query = select(m.EngineSetting).where(m.EngineSetting.mount_id == mount_id)
    return {row.name: row.value for row in (await session.execute(query)).scalars()}


async def put_engine_setting(session: AsyncSession, mount_id: int, name: str, value: str, now: datetime) -> None:
    row = await session.get(m.EngineSetting, (mount_id, name))
    if row is None:
        session.add(m.EngineSetting(mount_id=mount_id, name=name, value=value, updated_at=now))
    else:
        row.value, row.updated_at = value, now
    await session.flush()


@dataclass(frozen=True)
class LegacyVersion:
    key_id: int
    mount_path: str
    key_name: str
    key_type: str
    version: int
    sealed_material: bytes


async def legacy_versions(session: AsyncSession, material_format: int) -> list[LegacyVersion]:
    rows = await session.execute(
        select(
            m.KeyVersion.key_id,
            m.Mount.path,
            m.Key.name,
            m.Key.type,
            m.KeyVersion.version,
            m.KeyVersion.sealed_material,
        )
        .join(m.Key, m.Key.id == m.KeyVersion.key_id)
        .join(m.Mount, m.Mount.id == m.Key.mount_id)
        .where(m.KeyVersion.material_format == material_format)
        .order_by(m.KeyVersion.key_id, m.KeyVersion.version)
    )
    return [LegacyVersion(*row) for row in rows]


async def reseal_version(
    session: AsyncSession, key_id: int, version: int, sealed: bytes, material_format: int, master_key_id: str
) -> None:
    await session.execute(
        update(m.KeyVersion)
        .where(m.KeyVersion.key_id == key_id, m.KeyVersion.version == version)
        .values(sealed_material=sealed, material_format=material_format, master_key_id=master_key_id)
    )


async def bump_generation(session: AsyncSession, key_ids: Iterable[int], now: datetime) -> None:
    for key_id in sorted(set(key_ids)):
        await session.execute(
            update(m.Key).where(m.Key.id == key_id).values(generation=m.Key.generation + 1, updated_at=now)
        )


# -- policies -----------------------------------------------------------------------------------------


async def ensure_template_policy(session: AsyncSession, name: str, template: str, key_id: int, now: datetime) -> int:
    """The id of the built-in policy ``name`` (``<template>:<key>``), created if missing."""
    existing = (await session.execute(select(m.Policy.id).where(m.Policy.name == name))).scalar_one_or_none()
    if existing is not None:
        return existing
    policy = m.Policy(name=name, template=template, key_id=key_id, created_at=now, updated_at=now)
    session.add(policy)
    await session.flush()
    return policy.id


async def policy_document(session: AsyncSession, name: str) -> m.Policy | None:
    query = select(m.Policy).where(m.Policy.name == name)
    return (await session.execute(query)).scalar_one_or_none()


async def policy_names(session: AsyncSession) -> list[str]:
    return list((await session.execute(select(m.Policy.name).order_by(m.Policy.name))).scalars())


async def put_policy_document(session: AsyncSession, name: str, document: str, now: datetime) -> None:
    row = await policy_document(session, name)
    if row is None:
        session.add(m.Policy(name=name, document=document, created_at=now, updated_at=now))
    else:
        row.document, row.updated_at = document, now
    await session.flush()


async def delete_policy(session: AsyncSession, row: m.Policy) -> None:
    await session.delete(row)
    await session.flush()


# -- endpoints and their policies -----------------------------------------------------------------------


async def sync_endpoints(session: AsyncSession, endpoints: dict[str, Iterable[int]], now: datetime) -> bool:
    """Make endpoints and their policies (by id) equal to the configuration; True if anything changed."""
    changed = False
    existing = {e.name: e for e in (await session.execute(select(m.Endpoint))).scalars()}
    for name, endpoint in existing.items():
        if name not in endpoints:
            await session.delete(endpoint)
            changed = True
    for name, policy_ids in endpoints.items():
        endpoint = existing.get(name)
        if endpoint is None:
            endpoint = m.Endpoint(name=name, created_at=now)
            session.add(endpoint)
            await session.flush()
            changed = True
        wanted = set(policy_ids)
        current = {
            link.policy_id: link
            for link in (
                await session.execute(select(m.EndpointPolicy).where(m.EndpointPolicy.endpoint_id == endpoint.id))
            ).scalars()
        }
        for policy_id, link in current.items():
            if policy_id not in wanted:
                await session.delete(link)
                changed = True
        for policy_id in sorted(wanted - set(current)):
            session.add(m.EndpointPolicy(endpoint_id=endpoint.id, policy_id=policy_id))
            changed = True
    await session.flush()
    return changed


async def endpoint_grants(session: AsyncSession) -> dict[str, tuple[frozenset[str], int]]:
    """Every endpoint: the names of its policies, and how many tokens it has (expired ones not yet reaped
    included)."""
    result: dict[str, tuple[frozenset[str], int]] = {}
    for endpoint in (await session.execute(select(m.Endpoint))).scalars():
        names = (
            await session.execute(
                select(m.Policy.name)
                .join(m.EndpointPolicy, m.EndpointPolicy.policy_id == m.Policy.id)
                .where(m.EndpointPolicy.endpoint_id == endpoint.id)
            )
        ).scalars()
        tokens = (
            await session.execute(select(func.count()).select_from(m.Token).where(m.Token.endpoint_id == endpoint.id))
        ).scalar_one()
        result[endpoint.name] = (frozenset(names), tokens)
    return result


async def get_endpoint(session: AsyncSession, name: str) -> m.Endpoint | None:
    return (await session.execute(select(m.Endpoint).where(m.Endpoint.name == name))).scalar_one_or_none()


# -- tokens -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TokenRecord:
    accessor: str
    display_name: str
    created_at: datetime
    expires_at: datetime | None
    endpoint: str | None
    policies: tuple[str, ...]
    parent_accessor: str | None = None
    num_uses: int = 0
    renewable: bool = False
    ttl: int = 0
    explicit_max_ttl: int = 0
    meta: str = "{}"


async def _policies(session: AsyncSession, token: m.Token) -> tuple[str, ...]:
    if token.endpoint_id is not None:
        rows = await session.execute(
            select(m.Policy.name)
            .join(m.EndpointPolicy, m.EndpointPolicy.policy_id == m.Policy.id)
            .where(m.EndpointPolicy.endpoint_id == token.endpoint_id)
        )
        return tuple(sorted(rows.scalars()))
    rows = await session.execute(select(m.TokenPolicy.policy).where(m.TokenPolicy.token_id == token.id))
    return tuple(sorted(rows.scalars()))


async def _record(session: AsyncSession, token: m.Token) -> TokenRecord:
    endpoint = None
    if token.endpoint_id is not None:
        endpoint = (
            await session.execute(select(m.Endpoint.name).where(m.Endpoint.id == token.endpoint_id))
        ).scalar_one()
    return TokenRecord(
        token.accessor,
        token.display_name,
        token.created_at,
        token.expires_at,
        endpoint,
        await _policies(session, token),
        token.parent_accessor,
        token.num_uses,
        token.renewable,
        token.ttl,
        token.explicit_max_ttl,
        token.meta,
    )


async def find_token(session: AsyncSession, token_hmac: bytes) -> TokenRecord | None:
    token = (await session.execute(select(m.Token).where(m.Token.token_hmac == token_hmac))).scalar_one_or_none()
    return None if token is None else await _record(session, token)


async def find_token_by_accessor(session: AsyncSession, accessor: str) -> TokenRecord | None:
    token = (await session.execute(select(m.Token).where(m.Token.accessor == accessor))).scalar_one_or_none()
    return None if token is None else await _record(session, token)


async def token_accessor(session: AsyncSession, token_hmac: bytes) -> str | None:
    return (
        await session.execute(select(m.Token.accessor).where(m.Token.token_hmac == token_hmac))
    ).scalar_one_or_none()


async def token_accessors(session: AsyncSession) -> list[str]:
    return list((await session.execute(select(m.Token.accessor).order_by(m.Token.accessor))).scalars())


async def token_descendants(session: AsyncSession, accessor: str) -> list[str]:
    """The accessors of the tokens made by this one, and by those, recursively (not the token itself)."""
    found: list[str] = []
    seen = {accessor}
    level = [accessor]
    while level:
        rows = await session.execute(select(m.Token.accessor).where(m.Token.parent_accessor.in_(level)))
        level = [a for a in rows.scalars() if a not in seen]
        seen.update(level)
        found.extend(level)
    return found


async def delete_tokens(session: AsyncSession, accessors: Sequence[str]) -> list[str]:
    """Delete these tokens; returns the accessors of those that existed."""
    if not accessors:
        return []
    query = delete(m.Token).where(m.Token.accessor.in_(list(accessors)))
    return list((await session.execute(query.returning(m.Token.accessor))).scalars())


async def use_token(session: AsyncSession, accessor: str) -> int | None:
    """Take one use of a limited token in one statement: the uses left, or None if it had none left."""
    query = (
        update(m.Token)
        .where(m.Token.accessor == accessor, m.Token.num_uses > 0)
        .values(num_uses=m.Token.num_uses - 1)
        .returning(m.Token.num_uses)
    )
    return (await session.execute(query)).scalar_one_or_none()


async def set_token_expiry(session: AsyncSession, accessor: str, expires_at: datetime | None) -> bool:
    query = update(m.Token).where(m.Token.accessor == accessor).values(expires_at=expires_at)
    return (await session.execute(query.returning(m.Token.accessor))).scalar_one_or_none() is not None


async def add_token(
    session: AsyncSession,
    *,
    accessor: str,
    token_hmac: bytes,
    display_name: str,
    created_at: datetime,
    expires_at: datetime | None,
    policies: Sequence[str] = (),
    endpoint_id: int | None = None,
    parent_accessor: str | None = None,
    num_uses: int = 0,
    renewable: bool = False,
    ttl: int = 0,
    explicit_max_ttl: int = 0,
    meta: str = "{}",
) -> None:
    token = m.Token(
        accessor=accessor,
        token_hmac=token_hmac,
        display_name=display_name,
        created_at=created_at,
        expires_at=expires_at,
        endpoint_id=endpoint_id,
        parent_accessor=parent_accessor,
        num_uses=num_uses,
        renewable=renewable,
        ttl=ttl,
        explicit_max_ttl=explicit_max_ttl,
        meta=meta,
    )
    session.add(token)
    await session.flush()
    for policy in sorted(set(policies)):
        session.add(m.TokenPolicy(token_id=token.id, policy=policy))
    await session.flush()


async def newest_endpoint_token(session: AsyncSession, endpoint_id: int) -> m.Token | None:
    query = (
        select(m.Token)
        .where(m.Token.endpoint_id == endpoint_id)
        .order_by(m.Token.expires_at.desc(), m.Token.id.desc())
        .limit(1)
    )
    return (await session.execute(query)).scalar_one_or_none()


async def endpoint_token_accessors(session: AsyncSession) -> list[str]:
    return list((await session.execute(select(m.Token.accessor).where(m.Token.endpoint_id.is_not(None)))).scalars())


async def list_tokens(session: AsyncSession) -> list[TokenRecord]:
    tokens = (await session.execute(select(m.Token).order_by(m.Token.created_at, m.Token.id))).scalars().all()
    return [await _record(session, token) for token in tokens]


async def count_tokens_expiring(session: AsyncSession, now: datetime, until: datetime) -> int:
    """Live tokens that expire after ``now`` and by ``until`` (never-expiring ones never do)."""
    query = select(func.count()).select_from(m.Token).where(m.Token.expires_at > now, m.Token.expires_at <= until)
    return int(await session.scalar(query) or 0)


async def delete_expired_tokens(session: AsyncSession, now: datetime) -> list[str]:
    """Delete every expired token; returns their accessors."""
    query = delete(m.Token).where(m.Token.expires_at.is_not(None), m.Token.expires_at <= now)
    return list((await session.execute(query.returning(m.Token.accessor))).scalars())


# -- the master key's checks and the server's secrets ---------------------------------------------------


async def get_seal_check(session: AsyncSession, master_key_id: str) -> m.SealCheck | None:
    return await session.get(m.SealCheck, master_key_id)


async def seal_check_ids(session: AsyncSession) -> list[str]:
    return list((await session.execute(select(m.SealCheck.master_key_id).order_by(m.SealCheck.created_at))).scalars())


async def add_seal_check(session: AsyncSession, master_key_id: str, sealed_value: bytes, now: datetime) -> None:
    session.add(m.SealCheck(master_key_id=master_key_id, sealed_value=sealed_value, created_at=now))
    await session.flush()


async def server_secrets(session: AsyncSession) -> list[m.ServerSecret]:
    return list((await session.execute(select(m.ServerSecret))).scalars())


async def add_server_secret(
    session: AsyncSession, name: str, sealed_value: bytes, master_key_id: str, now: datetime
) -> None:
    session.add(m.ServerSecret(name=name, sealed_value=sealed_value, master_key_id=master_key_id, created_at=now))
    await session.flush()


async def count_tokens(session: AsyncSession) -> int:
    return (await session.execute(select(func.count()).select_from(m.Token))).scalar_one()


# --- audit log (service/audit_log.py) ---


async def add_audit_records(session: AsyncSession, rows: Sequence[tuple[str, int, str]]) -> None:
    """Records of the database sink: (chain id, seq, line). A record already stored (a batch retried after a
    commit whose answer was lost) is left as it is."""
    if rows:
        insert = pg_insert if session.bind.dialect.name == "postgresql" else sqlite_insert
        statement = insert(m.AuditRecord).on_conflict_do_nothing(index_elements=["chain_id", "seq"])
        await session.execute(statement, [{"chain_id": c, "seq": s, "line": line} for c, s, line in rows])


async def anchor_audit_chain(
    session: AsyncSession, chain_id: str, sink: str, seq: int, digest: str, closed: bool, now: datetime
) -> None:
    """Record a chain's head (one row per chain, moved forward)."""
    insert = pg_insert if session.bind.dialect.name == "postgresql" else sqlite_insert
    statement = (
        insert(m.AuditAnchor)
        .values(chain_id=chain_id, sink=sink, seq=seq, hash=digest, closed=closed, started_at=now, updated_at=now)
        .on_conflict_do_update(
            index_elements=["chain_id"], set_={"seq": seq, "hash": digest, "closed": closed, "updated_at": now}
        )
    )
    await session.execute(statement)


async def audit_anchors(session: AsyncSession) -> list[m.AuditAnchor]:
    return list((await session.execute(select(m.AuditAnchor))).scalars())


async def audit_record_lines(session: AsyncSession, after_id: int, limit: int) -> list[tuple[int, str]]:
    """The database sink's records in the order they were stored, a page at a time."""
    rows = await session.execute(
        select(m.AuditRecord.id, m.AuditRecord.line)
        .where(m.AuditRecord.id > after_id)
        .order_by(m.AuditRecord.id)
        .limit(limit)
    )
    return [(row.id, row.line) for row in rows]


# -- master-key rotation ---------------------------------------------------------------------------------


async def get_rollover(session: AsyncSession) -> m.MasterKeyRollover | None:
    return (await session.execute(select(m.MasterKeyRollover).limit(1))).scalar_one_or_none()


async def add_rollover(
    session: AsyncSession, old_key_id: str, new_key_id: str, new_key_sealed: bytes, old_key_sealed: bytes, now: datetime
) -> None:
    session.add(
        m.MasterKeyRollover(
            new_key_id=new_key_id,
            old_key_id=old_key_id,
            new_key_sealed=new_key_sealed,
            old_key_sealed=old_key_sealed,
            started_at=now,
        )
    )
    await session.flush()


async def end_rollover(session: AsyncSession, new_key_id: str, old_key_id: str) -> None:
    """The old key's check row and the rollover go together: the old key opens the database no more."""
    await session.execute(delete(m.SealCheck).where(m.SealCheck.master_key_id == old_key_id))
    await session.execute(delete(m.MasterKeyRollover).where(m.MasterKeyRollover.new_key_id == new_key_id))


@dataclass(frozen=True)
class SealedVersion:
    key_id: int
    mount_path: str
    key_name: str
    version: int
    material_format: int
    sealed_material: bytes


async def versions_not_sealed_with(session: AsyncSession, master_key_id: str, limit: int) -> list[SealedVersion]:
    rows = await session.execute(
        select(
            m.KeyVersion.key_id,
            m.Mount.path,
            m.Key.name,
            m.KeyVersion.version,
            m.KeyVersion.material_format,
            m.KeyVersion.sealed_material,
        )
        .join(m.Key, m.Key.id == m.KeyVersion.key_id)
        .join(m.Mount, m.Mount.id == m.Key.mount_id)
        .where(m.KeyVersion.master_key_id != master_key_id)
        .order_by(m.KeyVersion.key_id, m.KeyVersion.version)
        .limit(limit)
    )
    return [SealedVersion(*row) for row in rows]


async def reseal_versions_if_unchanged(
    session: AsyncSession, resealed: Sequence[tuple[SealedVersion, bytes]], master_key_id: str
) -> int:
    """Replace each version's sealed bytes only if they are still those read (a concurrent write wins, and
    the next pass looks at its row again), in one executemany. How many it replaced, where the driver
    tells (asyncpg does not: then every row given)."""
    if not resealed:
        return 0
    table = m.KeyVersion.__table__
    query = (
        update(table)
        .where(
            table.c.key_id == bindparam("b_key_id"),
            table.c.version == bindparam("b_version"),
            table.c.sealed_material == bindparam("b_old"),
        )
        .values(sealed_material=bindparam("b_new"), master_key_id=master_key_id)
    )
    params = [
        {"b_key_id": item.key_id, "b_version": item.version, "b_old": item.sealed_material, "b_new": sealed}
        for item, sealed in resealed
    ]
    result = await session.execute(query, params)
    return result.rowcount if result.rowcount is not None and result.rowcount >= 0 else len(params)


async def secrets_not_sealed_with(session: AsyncSession, master_key_id: str) -> list[m.ServerSecret]:
    query = select(m.ServerSecret).where(m.ServerSecret.master_key_id != master_key_id)
    return list((await session.execute(query)).scalars())


async def reseal_secret_if_unchanged(
    session: AsyncSession, name: str, old: bytes, sealed: bytes, master_key_id: str
) -> bool:
    result = await session.execute(
        update(m.ServerSecret)
        .where(m.ServerSecret.name == name, m.ServerSecret.sealed_value == old)
        .values(sealed_value=sealed, master_key_id=master_key_id)
    )
    return result.rowcount == 1


async def hold_sealed_rows(session: AsyncSession) -> None:
    """Until this transaction ends, no other writes a sealed row (PostgreSQL: SHARE locks, which wait for
    writers under way; SQLite's BEGIN IMMEDIATE already holds every other writer off), so what it counts
    stays true when it commits."""
    if session.bind.dialect.name == "postgresql":
        await session.execute(text("LOCK TABLE key_versions, server_secrets IN SHARE MODE"))


async def rows_by_master_key(session: AsyncSession) -> dict[str, dict[str, int]]:
    """How many sealed rows each master key id sealed: {"key_versions": {id: n}, "server_secrets": {id: n}}."""
    counts: dict[str, dict[str, int]] = {}
    for table, model in (("key_versions", m.KeyVersion), ("server_secrets", m.ServerSecret)):
        rows = await session.execute(select(model.master_key_id, func.count()).group_by(model.master_key_id))
        counts[table] = {key_id: n for key_id, n in rows}
    return counts
