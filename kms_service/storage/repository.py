"""The only module that writes SQL. Services call these functions inside a transaction they own.

Lookups return ``None`` when nothing is found; nothing here knows about HTTP or caching.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from kms_service.acl import policy_name
from kms_service.storage import models as m


@dataclass(frozen=True)
class StoredVersion:
    version: int
    sealed_material: bytes
    master_key_id: str
    created_at: datetime


@dataclass(frozen=True)
class StoredKey:
    row: m.Key
    versions: tuple[StoredVersion, ...]


# -- keys ---------------------------------------------------------------------------------------------


async def get_key(session: AsyncSession, name: str, for_update: bool = False) -> m.Key | None:
    query = select(m.Key).where(m.Key.name == name)
    if for_update:
        # PostgreSQL row lock; SQLite already holds the database write lock (BEGIN IMMEDIATE).
        query = query.with_for_update()
    return (await session.execute(query)).scalar_one_or_none()


async def load_key(session: AsyncSession, name: str) -> StoredKey | None:
    row = await get_key(session, name)
    if row is None:
        return None
    result = await session.execute(
        select(m.KeyVersion).where(m.KeyVersion.key_id == row.id).order_by(m.KeyVersion.version)
    )
    versions = tuple(
        StoredVersion(v.version, v.sealed_material, v.master_key_id, v.created_at) for v in result.scalars()
    )
    return StoredKey(row, versions)


async def key_generation(session: AsyncSession, name: str) -> int | None:
    return (await session.execute(select(m.Key.generation).where(m.Key.name == name))).scalar_one_or_none()


async def list_key_names(session: AsyncSession) -> list[str]:
    return list((await session.execute(select(m.Key.name).order_by(m.Key.name))).scalars())


async def create_key(
    session: AsyncSession,
    name: str,
    key_type: str,
    now: datetime,
    first_version: StoredVersion,
    public_key: str | None,
) -> m.Key:
    row = m.Key(
        name=name,
        type=key_type,
        latest_version=1,
        min_decryption_version=1,
        min_encryption_version=0,
        deletion_allowed=False,
        exportable=False,
        allow_plaintext_backup=False,
        generation=1,
        created_at=now,
        updated_at=now,
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


# -- endpoints and grants -------------------------------------------------------------------------------


async def sync_endpoints(
    session: AsyncSession,
    endpoints: dict[str, Iterable[tuple[str, str]]],
    key_ids: dict[str, int],
    now: datetime,
) -> None:
    """Make endpoints and their grants equal to the configuration (grants are (policy, key name))."""
    existing = {e.name: e for e in (await session.execute(select(m.Endpoint))).scalars()}
    for name, endpoint in existing.items():
        if name not in endpoints:
            await session.delete(endpoint)
    for name, grants in endpoints.items():
        endpoint = existing.get(name)
        if endpoint is None:
            endpoint = m.Endpoint(name=name, created_at=now)
            session.add(endpoint)
            await session.flush()
        wanted = {(policy, key_ids[key]) for policy, key in grants}
        current = {
            (g.policy, g.key_id): g
            for g in (
                await session.execute(select(m.EndpointGrant).where(m.EndpointGrant.endpoint_id == endpoint.id))
            ).scalars()
        }
        for pair, grant in current.items():
            if pair not in wanted:
                await session.delete(grant)
        for policy, key_id in wanted - set(current):
            session.add(m.EndpointGrant(endpoint_id=endpoint.id, policy=policy, key_id=key_id))
    await session.flush()


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


async def _policies(session: AsyncSession, token: m.Token) -> tuple[str, ...]:
    if token.endpoint_id is not None:
        rows = await session.execute(
            select(m.EndpointGrant.policy, m.Key.name)
            .join(m.Key, m.Key.id == m.EndpointGrant.key_id)
            .where(m.EndpointGrant.endpoint_id == token.endpoint_id)
        )
        return tuple(sorted(policy_name(policy, key) for policy, key in rows))
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
    )


async def find_token(session: AsyncSession, token_hmac: bytes) -> TokenRecord | None:
    token = (await session.execute(select(m.Token).where(m.Token.token_hmac == token_hmac))).scalar_one_or_none()
    return None if token is None else await _record(session, token)


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
) -> None:
    token = m.Token(
        accessor=accessor,
        token_hmac=token_hmac,
        display_name=display_name,
        created_at=created_at,
        expires_at=expires_at,
        endpoint_id=endpoint_id,
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


async def list_tokens(session: AsyncSession) -> list[TokenRecord]:
    tokens = (await session.execute(select(m.Token).order_by(m.Token.created_at, m.Token.id))).scalars().all()
    return [await _record(session, token) for token in tokens]


async def delete_token(session: AsyncSession, *, accessor: str | None = None, token_hmac: bytes | None = None) -> bool:
    query = delete(m.Token)
    query = query.where(m.Token.accessor == accessor) if accessor else query.where(m.Token.token_hmac == token_hmac)
    return (await session.execute(query)).rowcount > 0


async def delete_expired_tokens(session: AsyncSession, now: datetime) -> int:
    result = await session.execute(delete(m.Token).where(m.Token.expires_at.is_not(None), m.Token.expires_at <= now))
    return result.rowcount


# -- seal check ---------------------------------------------------------------------------------------


async def get_seal_check(session: AsyncSession) -> m.SealCheck | None:
    return await session.get(m.SealCheck, 1)


async def add_seal_check(session: AsyncSession, master_key_id: str, sealed_value: bytes, now: datetime) -> None:
    session.add(m.SealCheck(id=1, master_key_id=master_key_id, sealed_value=sealed_value, created_at=now))
    await session.flush()
