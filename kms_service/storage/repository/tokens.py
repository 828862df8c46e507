"""Tokens: lookups by HMAC or accessor, their policies, lifecycle (use, renew, revoke, expire) and counts."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from kms_service.storage import models as m

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
    namespace: str = ""
    period: int = 0


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
        token.namespace,
        token.period,
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


async def token_accessors(session: AsyncSession, namespace: str = "") -> list[str]:
    query = select(m.Token.accessor).where(m.Token.namespace == namespace).order_by(m.Token.accessor)
    return list((await session.execute(query)).scalars())


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
    namespace: str = "",
    period: int = 0,
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
        namespace=namespace,
        period=period,
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


async def count_tokens(session: AsyncSession) -> int:
    return (await session.execute(select(func.count()).select_from(m.Token))).scalar_one()


# -- token roles (auth/token/roles/<name>) ---------------------------------------------------------------


async def get_token_role(session: AsyncSession, namespace: str, name: str) -> str | None:
    """A role's settings (JSON), or None."""
    query = select(m.TokenRole.settings).where(m.TokenRole.namespace == namespace, m.TokenRole.name == name)
    return (await session.execute(query)).scalar_one_or_none()


async def put_token_role(session: AsyncSession, namespace: str, name: str, settings: str) -> None:
    query = update(m.TokenRole).where(m.TokenRole.namespace == namespace, m.TokenRole.name == name)
    if (await session.execute(query.values(settings=settings).returning(m.TokenRole.id))).scalar_one_or_none():
        return
    session.add(m.TokenRole(namespace=namespace, name=name, settings=settings))
    await session.flush()


async def delete_token_role(session: AsyncSession, namespace: str, name: str) -> bool:
    query = delete(m.TokenRole).where(m.TokenRole.namespace == namespace, m.TokenRole.name == name)
    return (await session.execute(query.returning(m.TokenRole.id))).scalar_one_or_none() is not None


async def token_role_names(session: AsyncSession, namespace: str) -> list[str]:
    query = select(m.TokenRole.name).where(m.TokenRole.namespace == namespace).order_by(m.TokenRole.name)
    return list((await session.execute(query)).scalars())


async def give_tokens_policy(session: AsyncSession, policy: str) -> list[str]:
    """Add ``policy`` to every operator token that lacks it, root tokens excepted; their accessors."""
    has_it = select(m.TokenPolicy.token_id).where(m.TokenPolicy.policy.in_((policy, "root")))
    tokens = (
        await session.execute(
            select(m.Token.id, m.Token.accessor).where(m.Token.endpoint_id.is_(None), m.Token.id.not_in(has_it))
        )
    ).all()
    for token_id, _accessor in tokens:
        session.add(m.TokenPolicy(token_id=token_id, policy=policy))
    await session.flush()
    return [accessor for _token_id, accessor in tokens]
