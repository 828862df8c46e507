"""Policies, endpoints and the policies each endpoint grants; the lock provisioning takes."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from kms_service.storage import models as m

# Any constant: nodes sharing one PostgreSQL take turns provisioning and unlocking it.
PROVISION_LOCK_ID = 0x6B6D735F70726F76


async def serialize_writers(session: AsyncSession) -> None:
    """Nodes sharing PostgreSQL provision one at a time (SQLite's BEGIN IMMEDIATE already does this)."""
    if session.bind.dialect.name == "postgresql":
        await session.execute(text(f"SELECT pg_advisory_xact_lock({PROVISION_LOCK_ID})"))


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
