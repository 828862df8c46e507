"""Vault's response wrapping: a response kept sealed under the master key for whoever holds its single-use
wrapping token (``X-Vault-Wrap-TTL``, ``sys/wrapping/*``).

A wrapping token is random like any token, and like one only its HMAC is stored (``wrapped_responses``). It
is not in ``tokens``: it authenticates nothing, so it opens only what the ``sys/wrapping/*`` paths look up
with it. Unwrapping deletes the row in the same statement that reads it, so a token unwraps at most once,
whichever node or worker is asked; the reaper deletes what expired unread.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from kms_service.errors import SealError
from kms_service.seal import Sealer, ServerSecrets, wrapped_response_aad
from kms_service.service.tokens import utcnow
from kms_service.storage import repository as repo
from kms_service.storage.database import Database
from kms_service.tokens import looks_like_token, new_accessor, new_token, token_digest

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WrapInfo:
    """What Vault answers in ``wrap_info`` (the token is shown once, here, and never stored)."""

    token: str
    accessor: str
    ttl: int
    created_at: datetime
    creation_path: str
    wrapped_accessor: str | None = None

    def as_vault(self) -> dict[str, object]:
        info: dict[str, object] = {
            "token": self.token,
            "accessor": self.accessor,
            "ttl": self.ttl,
            "creation_time": rfc3339(self.created_at),
            "creation_path": self.creation_path,
        }
        if self.wrapped_accessor:  # Vault leaves it out when empty
            info["wrapped_accessor"] = self.wrapped_accessor
        return info


@dataclass(frozen=True)
class WrappedLookup:
    creation_path: str
    created_at: datetime
    ttl: int


def rfc3339(value: datetime) -> str:
    """Vault's creation_time: RFC 3339 in UTC with the fraction Go prints (no trailing zeros)."""
    text = value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f").rstrip("0").rstrip(".")
    return text + "Z"


class ResponseWrapping:
    def __init__(self, db: Database, master_key: Sealer, secrets: ServerSecrets) -> None:
        self._db = db
        self._master_key = master_key
        self._hmac_key = secrets.token_hmac_key

    def _digest(self, token: str | None) -> bytes | None:
        if not token or not looks_like_token(token):
            return None
        return token_digest(self._hmac_key, token)

    async def wrap(
        self, response: bytes, creation_path: str, ttl: int, wrapped_accessor: str | None = None
    ) -> WrapInfo:
        """Keep ``response`` (the JSON answer as it would have been sent) for ``ttl`` seconds under a new token."""
        async with self._db.writing() as session:
            return await self._add(session, response, creation_path, ttl, wrapped_accessor)

    async def _add(
        self, session: AsyncSession, response: bytes, creation_path: str, ttl: int, wrapped_accessor: str | None
    ) -> WrapInfo:
        token, accessor, now = new_token(), new_accessor(), utcnow()
        await repo.add_wrapped_response(
            session,
            accessor=accessor,
            token_hmac=token_digest(self._hmac_key, token),
            creation_path=creation_path,
            created_at=now,
            expires_at=now + timedelta(seconds=ttl),
            ttl=ttl,
            wrapped_accessor=wrapped_accessor,
            sealed_response=self._master_key.seal(response, wrapped_response_aad(accessor)),
            master_key_id=self._master_key.key_id,
        )
        return WrapInfo(token, accessor, ttl, now, creation_path, wrapped_accessor)

    async def unwrap(self, token: str | None) -> bytes | None:
        """The wrapped response, once: the row is gone after this. None: unknown, expired or already taken."""
        digest = self._digest(token)
        if digest is None:
            return None
        async with self._db.writing() as session:
            record = await repo.take_wrapped_response(session, digest, utcnow())
            if record is None:
                return None
            # Opened before the commit: a row that does not open stays for another try, not lost.
            return await self._open(record)

    async def lookup(self, token: str | None) -> WrappedLookup | None:
        digest = self._digest(token)
        if digest is None:
            return None
        async with self._db.reading() as session:
            record = await repo.find_wrapped_response(session, digest, utcnow())
        return None if record is None else WrappedLookup(record.creation_path, record.created_at, record.ttl)

    async def rewrap(self, token: str | None) -> WrapInfo | None:
        """The same response under a new token with the same TTL from now; the old token is spent."""
        digest = self._digest(token)
        if digest is None:
            return None
        async with self._db.writing() as session:
            record = await repo.take_wrapped_response(session, digest, utcnow())
            if record is None:
                return None
            response = await self._open(record)
            return await self._add(session, response, record.creation_path, record.ttl, record.wrapped_accessor)

    async def _open(self, record: repo.WrappedRecord) -> bytes:
        aad = wrapped_response_aad(record.accessor)
        try:
            return self._master_key.unseal(record.sealed_response, aad)
        except SealError:
            if not await self._master_key.catch_up():  # re-sealed under a key this process has not seen yet
                raise
            return self._master_key.unseal(record.sealed_response, aad)

    async def reap(self) -> int:
        async with self._db.writing() as session:
            reaped = await repo.delete_expired_wrapped_responses(session, utcnow())
        if reaped:
            log.info("reaped %d expired wrapped response(s)", reaped)
        return reaped
