"""Mounts (Vault's sys/mounts) and each mount's own settings (config/keys, cache-config)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from kms_service.storage import models as m

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


async def mount_settings(session: AsyncSession, mount_id: int) -> dict[str, str]:
    query = select(m.MountSetting).where(m.MountSetting.mount_id == mount_id)
    return {row.name: row.value for row in (await session.execute(query)).scalars()}


async def put_mount_setting(session: AsyncSession, mount_id: int, name: str, value: str, now: datetime) -> None:
    row = await session.get(m.MountSetting, (mount_id, name))
    if row is None:
        session.add(m.MountSetting(mount_id=mount_id, name=name, value=value, updated_at=now))
    else:
        row.value, row.updated_at = value, now
    await session.flush()
