"""Tokens: authentication with a cache (dropped per accessor on change), creation, revocation, reaping.

Token HMACs and endpoint tokens use the server's own random keys (``ServerSecrets``), held sealed in the
database: a master-key rotation re-seals them and no token changes.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from kms_service.acl import ACL, POLICY_TEMPLATES
from kms_service.errors import ConfigError, InvalidRequest
from kms_service.seal import ServerSecrets
from kms_service.service.caching import SingleFlight
from kms_service.service.invalidation import Change, Invalidator, Kind
from kms_service.service.policies import PolicyService
from kms_service.storage import repository as repo
from kms_service.storage.engine import Database
from kms_service.tokens import (
    ACCESSOR_RE,
    TokenInfo,
    derived_token,
    looks_like_token,
    new_accessor,
    new_token,
    token_digest,
)

log = logging.getLogger(__name__)

ENDPOINT_TOKEN_TTL = timedelta(days=365)
# relationships re-issues an endpoint token when the current one has less than this left.
ENDPOINT_TOKEN_RENEW_WITHIN = timedelta(days=30)


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Principal:
    """An authenticated caller."""

    token: str
    info: TokenInfo
    acl: ACL


@dataclass
class _CachedToken:
    principal: Principal | None  # None: no such token (cached too, to blunt guessing)
    checked_at: float


class TokenService:
    MAX_CACHED = 10_000

    def __init__(
        self,
        db: Database,
        secrets: ServerSecrets,
        policies: PolicyService,
        cache_ttl: float,
        invalidator: Invalidator,
    ) -> None:
        self._db = db
        self._hmac_key = secrets.token_hmac_key
        self._endpoint_key = secrets.endpoint_token_key
        self._policies = policies
        self._cache_ttl = cache_ttl
        self._cache: OrderedDict[bytes, _CachedToken] = OrderedDict()
        self._digest_by_accessor: dict[str, bytes] = {}
        self._loading = SingleFlight()
        invalidator.subscribe(Kind.TOKEN, self._on_token_change)
        # A policy or an endpoint's grants changed: the ACLs built into cached principals are stale.
        invalidator.subscribe(Kind.POLICY, self._drop_all)
        invalidator.subscribe(Kind.ENDPOINT, self._drop_all)

    def _on_token_change(self, change: Change) -> None:
        if change.name is None:
            self._drop_all(change)
            return
        digest = self._digest_by_accessor.pop(change.name, None)
        if digest is not None:
            self._cache.pop(digest, None)

    def _drop_all(self, _change: Change) -> None:
        self._cache.clear()
        self._digest_by_accessor.clear()

    def digest(self, token: str) -> bytes:
        return token_digest(self._hmac_key, token)

    async def authenticate(self, token: str | None) -> Principal | None:
        """The principal for a token, or None (unknown, expired or revoked: the caller says 403)."""
        if not token:
            return None
        digest = self.digest(token)
        entry = self._fresh(digest)
        if entry is None:
            async with self._loading(digest):
                entry = self._fresh(digest) or await self._lookup(token, digest)
        if entry.principal is None or entry.principal.info.expired(utcnow()):
            return None
        return entry.principal

    def _fresh(self, digest: bytes) -> _CachedToken | None:
        entry = self._cache.get(digest)
        if entry is None or time.monotonic() - entry.checked_at >= self._cache_ttl:
            return None
        return entry

    async def _lookup(self, token: str, digest: bytes) -> _CachedToken:
        async with self._db.reading() as session:
            record = await repo.find_token(session, digest)
        principal = None
        if record is not None:
            info = TokenInfo(
                record.accessor, record.policies, record.display_name, record.created_at, record.expires_at
            )
            principal = Principal(token, info, await self._policies.acl(record.policies))
            self._digest_by_accessor[record.accessor] = digest
        # Tokens are random, so none is created after being guessed: caching misses is safe.
        entry = _CachedToken(principal, time.monotonic())
        self._cache[digest] = entry
        self._cache.move_to_end(digest)
        while len(self._cache) > self.MAX_CACHED:
            _, evicted = self._cache.popitem(last=False)
            if evicted.principal is not None:
                self._digest_by_accessor.pop(evicted.principal.info.accessor, None)
        return entry

    async def create(
        self, policies: list[str], ttl: timedelta | None, display_name: str = "token"
    ) -> tuple[str, TokenInfo]:
        if not policies:
            raise InvalidRequest("at least one policy is required")
        for name in policies:
            # A typo must not make a token that silently grants nothing: the policy must exist.
            if not await self._policies.exists(name):
                raise InvalidRequest(
                    "unknown policy; use 'root', '<policy>:<key>' with policy one of "
                    f"{', '.join(POLICY_TEMPLATES)}, or the name of a policy written with sys/policies/acl"
                )
        token, accessor, now = new_token(), new_accessor(), utcnow()
        expires_at = now + ttl if ttl else None
        async with self._db.writing() as session:
            await repo.add_token(
                session,
                accessor=accessor,
                token_hmac=self.digest(token),
                display_name=display_name,
                created_at=now,
                expires_at=expires_at,
                policies=policies,
            )
        return token, TokenInfo(accessor, tuple(sorted(set(policies))), display_name, now, expires_at)

    async def endpoint_token(self, endpoint: str) -> tuple[str, datetime]:
        """The endpoint's current token, or a new one (valid one year) when it has under 30 days left."""
        async with self._db.writing() as session:
            await repo.serialize_writers(session)
            row = await repo.get_endpoint(session, endpoint)
            if row is None:
                raise ConfigError(f"endpoint '{endpoint}' is not in the service configuration")
            now = utcnow()
            current = await repo.newest_endpoint_token(session, row.id)
            if current is not None and current.expires_at - now > ENDPOINT_TOKEN_RENEW_WITHIN:
                return derived_token(self._endpoint_key, current.accessor), current.expires_at
            accessor = new_accessor()
            token = derived_token(self._endpoint_key, accessor)
            expires_at = now + ENDPOINT_TOKEN_TTL
            await repo.add_token(
                session,
                accessor=accessor,
                token_hmac=self.digest(token),
                display_name=f"endpoint-{endpoint}",
                created_at=now,
                expires_at=expires_at,
                endpoint_id=row.id,
            )
            log.info("issued a new token for endpoint %s (accessor %s)", endpoint, accessor)
            return token, expires_at

    async def revoke(self, value: str) -> bool:
        """Revoke by accessor or by the token itself."""
        async with self._db.writing() as session:
            if ACCESSOR_RE.fullmatch(value):
                accessor = await repo.delete_token(session, accessor=value)
            elif looks_like_token(value):
                accessor = await repo.delete_token(session, token_hmac=self.digest(value))
            else:
                raise InvalidRequest("not a token or an accessor")
            if accessor is not None:
                self._db.changed(session, Change(Kind.TOKEN, accessor))
        return accessor is not None

    async def list(self) -> list[repo.TokenRecord]:
        return await list_tokens(self._db)

    async def reap(self) -> int:
        async with self._db.writing() as session:
            accessors = await repo.delete_expired_tokens(session, utcnow())
            self._db.changed(session, *(Change(Kind.TOKEN, accessor) for accessor in accessors))
        if accessors:
            log.info("reaped %d expired token(s)", len(accessors))
        return len(accessors)


async def list_tokens(db: Database) -> list[repo.TokenRecord]:
    """Every token's accessor, policies and expiry (never the token); needs no master key."""
    async with db.reading() as session:
        return await repo.list_tokens(session)
