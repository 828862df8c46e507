"""Namespaces (OpenBao's sys/namespaces), and what a namespace's deletion takes with it."""

from __future__ import annotations

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from kms_service.storage import models as m


async def list_namespaces(session: AsyncSession) -> list[m.Namespace]:
    return list((await session.execute(select(m.Namespace).order_by(m.Namespace.path))).scalars())


async def get_namespace(session: AsyncSession, path: str) -> m.Namespace | None:
    return (await session.execute(select(m.Namespace).where(m.Namespace.path == path))).scalar_one_or_none()


async def add_namespace(session: AsyncSession, row: m.Namespace) -> m.Namespace:
    session.add(row)
    await session.flush()
    return row


async def delete_namespace(session: AsyncSession, row: m.Namespace) -> list[str]:
    """The namespace, its policy documents (named ``<path><name>``), token roles and tokens; returns the
    tokens' accessors. Its mounts and child namespaces must be gone first (the caller checks)."""
    prefix = row.path.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    await session.execute(delete(m.Policy).where(m.Policy.name.like(f"{prefix}%", escape="\\")))
    await session.execute(delete(m.TokenRole).where(m.TokenRole.namespace == row.path))
    accessors = await session.execute(delete(m.Token).where(m.Token.namespace == row.path).returning(m.Token.accessor))
    revoked = list(accessors.scalars())
    await session.delete(row)
    await session.flush()
    return revoked
