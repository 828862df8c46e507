"""Keys: their rows, versions and usage counters, rotation candidates, and the moves of old key material
formats (re-sealed in place)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, func, select, update
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


# -- key material in an old format -------------------------------------------------------------------


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
