"""Wrapped responses (Vault's response wrapping): kept under a wrapping token's HMAC, taken at most once.

Taking one is a single ``DELETE ... RETURNING`` on a row not yet expired: whichever transaction deletes the
row gets it, on any node or worker, and every other gets nothing."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from kms_service.storage import models as m


@dataclass(frozen=True)
class WrappedRecord:
    accessor: str
    creation_path: str
    created_at: datetime
    expires_at: datetime
    ttl: int
    wrapped_accessor: str | None
    sealed_response: bytes


_COLUMNS = (
    m.WrappedResponse.accessor,
    m.WrappedResponse.creation_path,
    m.WrappedResponse.created_at,
    m.WrappedResponse.expires_at,
    m.WrappedResponse.ttl,
    m.WrappedResponse.wrapped_accessor,
    m.WrappedResponse.sealed_response,
)


async def add_wrapped_response(
    session: AsyncSession,
    *,
    accessor: str,
    token_hmac: bytes,
    creation_path: str,
    created_at: datetime,
    expires_at: datetime,
    ttl: int,
    wrapped_accessor: str | None,
    sealed_response: bytes,
    master_key_id: str,
) -> None:
    session.add(
        m.WrappedResponse(
            accessor=accessor,
            token_hmac=token_hmac,
            creation_path=creation_path,
            created_at=created_at,
            expires_at=expires_at,
            ttl=ttl,
            wrapped_accessor=wrapped_accessor,
            sealed_response=sealed_response,
            master_key_id=master_key_id,
        )
    )
    await session.flush()


async def find_wrapped_response(session: AsyncSession, token_hmac: bytes, now: datetime) -> WrappedRecord | None:
    """The live row of a wrapping token, left in place (lookup)."""
    query = select(*_COLUMNS).where(m.WrappedResponse.token_hmac == token_hmac, m.WrappedResponse.expires_at > now)
    row = (await session.execute(query)).one_or_none()
    return None if row is None else WrappedRecord(*row)


async def take_wrapped_response(session: AsyncSession, token_hmac: bytes, now: datetime) -> WrappedRecord | None:
    """Delete the live row of a wrapping token and return it: None when it is unknown, expired, or another
    transaction took it first (the DELETE's returned rows decide, so at most one caller ever gets it)."""
    query = (
        delete(m.WrappedResponse)
        .where(m.WrappedResponse.token_hmac == token_hmac, m.WrappedResponse.expires_at > now)
        .returning(*_COLUMNS)
    )
    rows = (await session.execute(query)).all()
    return WrappedRecord(*rows[0]) if len(rows) == 1 else None


async def delete_expired_wrapped_responses(session: AsyncSession, now: datetime) -> int:
    """Delete every expired wrapped response; how many."""
    query = delete(m.WrappedResponse).where(m.WrappedResponse.expires_at <= now).returning(m.WrappedResponse.id)
    return len((await session.execute(query)).all())


async def count_wrapped_responses(session: AsyncSession) -> int:
    return len((await session.execute(select(m.WrappedResponse.id))).all())
