"""What the master key seals: its checks, the server's secrets, and a rollover to a new master key
(re-sealing each row, unless it changed meanwhile)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import ColumnElement, bindparam, delete, func, select, text, tuple_, update
from sqlalchemy.ext.asyncio import AsyncSession

from kms_service.storage import models as m

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


async def _sealed_versions(session: AsyncSession, where: ColumnElement[bool], limit: int) -> list[SealedVersion]:
    """The key versions ``where`` selects, ``limit`` at a time, in (key id, version) order."""
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
        .where(where)
        .order_by(m.KeyVersion.key_id, m.KeyVersion.version)
        .limit(limit)
    )
    return [SealedVersion(*row) for row in rows]


async def versions_not_sealed_with(session: AsyncSession, master_key_id: str, limit: int) -> list[SealedVersion]:
    return await _sealed_versions(session, m.KeyVersion.master_key_id != master_key_id, limit)


async def versions_after(session: AsyncSession, after: tuple[int, int], limit: int) -> list[SealedVersion]:
    """Every key version, ``limit`` at a time: those after (key id, version) ``after``, in that order."""
    where = tuple_(m.KeyVersion.key_id, m.KeyVersion.version) > tuple_(*after)
    return await _sealed_versions(session, where, limit)


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


async def wrapped_responses_not_sealed_with(
    session: AsyncSession, master_key_id: str, limit: int
) -> list[tuple[str, bytes]]:
    """(accessor, sealed response) of wrapped responses sealed under another master key."""
    query = (
        select(m.WrappedResponse.accessor, m.WrappedResponse.sealed_response)
        .where(m.WrappedResponse.master_key_id != master_key_id)
        .order_by(m.WrappedResponse.id)
        .limit(limit)
    )
    return [(accessor, sealed) for accessor, sealed in await session.execute(query)]


async def wrapped_responses_after(session: AsyncSession, after_id: int, limit: int) -> list[tuple[int, str, bytes]]:
    """(row id, accessor, sealed response) of every wrapped response, ``limit`` at a time, after ``after_id``."""
    query = (
        select(m.WrappedResponse.id, m.WrappedResponse.accessor, m.WrappedResponse.sealed_response)
        .where(m.WrappedResponse.id > after_id)
        .order_by(m.WrappedResponse.id)
        .limit(limit)
    )
    return [(row_id, accessor, sealed) for row_id, accessor, sealed in await session.execute(query)]


async def reseal_wrapped_response_if_unchanged(
    session: AsyncSession, accessor: str, old: bytes, sealed: bytes, master_key_id: str
) -> bool:
    """Replace the sealed response only if it is still the one read (an unwrap may have deleted the row)."""
    result = await session.execute(
        update(m.WrappedResponse)
        .where(m.WrappedResponse.accessor == accessor, m.WrappedResponse.sealed_response == old)
        .values(sealed_response=sealed, master_key_id=master_key_id)
    )
    return result.rowcount == 1


async def hold_sealed_rows(session: AsyncSession) -> None:
    """Until this transaction ends, no other writes a sealed row (PostgreSQL: SHARE locks, which wait for
    writers under way; SQLite's BEGIN IMMEDIATE already holds every other writer off), so what it counts
    stays true when it commits."""
    if session.bind.dialect.name == "postgresql":
        await session.execute(text("LOCK TABLE key_versions, server_secrets, wrapped_responses IN SHARE MODE"))


async def rows_by_master_key(session: AsyncSession) -> dict[str, dict[str, int]]:
    """How many sealed rows each master key id sealed: {"key_versions": {id: n}, "server_secrets": {id: n},
    "wrapped_responses": {id: n}}."""
    counts: dict[str, dict[str, int]] = {}
    tables = (
        ("key_versions", m.KeyVersion),
        ("server_secrets", m.ServerSecret),
        ("wrapped_responses", m.WrappedResponse),
    )
    for table, model in tables:
        rows = await session.execute(select(model.master_key_id, func.count()).group_by(model.master_key_id))
        counts[table] = {key_id: n for key_id, n in rows}
    return counts
