"""Tokens: authentication with a cache (dropped per accessor on change), creation, revocation, reaping.

Token HMACs and endpoint tokens use the server's own random keys (``ServerSecrets``), held sealed in the
database: a master-key rotation re-seals them and no token changes.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

from kms_service.acl import ACL, POLICY_TEMPLATES
from kms_service.durations import human_seconds
from kms_service.errors import ConfigError, InvalidRequest
from kms_service.policy_documents import token_policy_names
from kms_service.seal import ServerSecrets
from kms_service.service.caching import CacheStats, OnRace, RefreshingCache
from kms_service.service.database_watch import DatabaseWatch
from kms_service.service.invalidation import Change, Invalidator, Kind
from kms_service.service.policies import PolicyService, canonical_name
from kms_service.storage import repository as repo
from kms_service.storage.database import Database
from kms_service.tokens import (
    ACCESSOR_RE,
    BATCH,
    MAX_BATCH_TOKEN,
    SERVICE,
    TOKEN_TYPES,
    TokenInfo,
    TokenRole,
    batch_token_key,
    clean_display_name,
    derived_token,
    is_batch_token,
    looks_like_token,
    new_accessor,
    new_token,
    open_batch_token,
    seal_batch_token,
    token_digest,
)

log = logging.getLogger(__name__)

ENDPOINT_TOKEN_TTL = timedelta(days=365)
DEFAULT_TOKEN_TTL = 768 * 3600
# Emptied when full: each entry is a token and its digest, and only valid tokens go in.
MAX_KNOWN_DIGESTS = 100_000
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


@dataclass(frozen=True)
class TokenRequest:
    """What auth/token/create asks for (durations in seconds; ttl None: not given)."""

    policies: tuple[str, ...] = ()
    ttl: int | None = None
    explicit_max_ttl: int = 0
    display_name: str = ""
    num_uses: int = 0
    renewable: bool = True
    meta: Mapping[str, str] | None = None
    orphan: bool = False
    period: int = 0
    token_type: str | None = None  # None: not asked (a service token, or the role's default)
    no_default_policy: bool = False


def token_info(record: repo.TokenRecord) -> TokenInfo:
    # An endpoint's tokens carry the default policy too (Vault gives it to every token but root).
    policies = record.policies if record.endpoint is None else token_policy_names(record.policies)
    return TokenInfo(
        record.accessor,
        policies,
        record.display_name,
        record.created_at,
        record.expires_at,
        parent_accessor=record.parent_accessor,
        num_uses=record.num_uses,
        renewable=record.renewable,
        ttl=record.ttl,
        explicit_max_ttl=record.explicit_max_ttl,
        meta=json.loads(record.meta or "{}") or None,
        endpoint=record.endpoint,
        namespace=record.namespace,
        period=record.period,
    )


class TokenService:
    MAX_CACHED = 10_000

    def __init__(
        self,
        db: Database,
        secrets: ServerSecrets,
        policies: PolicyService,
        cache_ttl: float,
        invalidator: Invalidator,
        max_ttl: int = 365 * 24 * 3600,
        *,
        watch: DatabaseWatch,
        default_ttl: int = DEFAULT_TOKEN_TTL,
    ) -> None:
        self._db = db
        # The life auth/token/create gives a token asked without a TTL (seconds): Vault's 768h unless set.
        self.default_ttl = default_ttl
        self._batch_key = batch_token_key(secrets.token_hmac_key)
        # The longest life auth/token/create gives a token (seconds): longer asks are capped, with a warning.
        self.max_ttl = max_ttl
        self._hmac_key = secrets.token_hmac_key
        self._endpoint_key = secrets.endpoint_token_key
        self._policies = policies
        # Keyed by the token's HMAC; a load needs the token itself (a principal holds it). Tokens are random,
        # so none is created after being guessed: an unknown one (None) is cached too, to blunt guessing. A
        # token with limited uses is read again every time (its count lives in the database), so it is never
        # cached; nor is a read that raced a change (perhaps this token's revocation, committed after it).
        self._cache: RefreshingCache[bytes, Principal | None, str] = RefreshingCache(
            ttl=cache_ttl,
            watch=watch,  # during an outage, cached tokens answer within --stale-while-down
            invalidator=invalidator,
            load=self._lookup,
            keep=lambda principal: principal is None or principal.info.num_uses <= 0,
            on_race=OnRace.ANSWER_ONLY,
            # A batch token has no accessor: its parent's revocation drops it.
            alias=lambda principal: (
                None if principal is None else principal.info.accessor or principal.info.parent_accessor
            ),
            max_entries=self.MAX_CACHED,
            stats=CacheStats(),
        )
        # Valid tokens seen → their HMAC, so a warm request costs dict lookups, no HMAC.
        self._known_digests: dict[str, bytes] = {}
        invalidator.subscribe(Kind.TOKEN, self._on_token_change)
        # A policy or an endpoint's grants changed: the ACLs built into cached principals are stale.
        invalidator.subscribe(Kind.POLICY, self._drop_all)
        invalidator.subscribe(Kind.ENDPOINT, self._drop_all)

    @property
    def cache_stats(self) -> CacheStats:
        return self._cache.stats

    def _on_token_change(self, change: Change) -> None:
        if change.name is None:
            self._drop_all(change)
        else:
            self._cache.drop_alias(change.name)

    def _drop_all(self, _change: Change | None) -> None:
        self._cache.clear()

    def digest(self, token: str) -> bytes:
        return token_digest(self._hmac_key, token)

    async def authenticate(self, token: str | None) -> Principal | None:
        """The principal for a token, or None (unknown, expired or revoked: the caller says 403)."""
        if not token:
            return None
        digest = self._known_digests.get(token) or self.digest(token)
        principal = await self._cache.get(digest, token)
        if principal is None or principal.info.expired(utcnow()):
            return None
        if token not in self._known_digests:
            # Valid tokens only (a flood of made-up ones never fills it); a token's digest never changes.
            if len(self._known_digests) >= MAX_KNOWN_DIGESTS:
                self._known_digests.clear()
            self._known_digests[token] = digest
        return principal

    async def stop_refreshing(self) -> None:
        await self._cache.stop_refreshing()

    async def _lookup(self, digest: bytes, _held: Principal | None, token: str) -> Principal | None:
        """The cache's loader: the token's principal as stored now (None: no such token)."""
        if is_batch_token(token):
            info = await self._open_batch(token)
            return (
                None
                if info is None
                else Principal(token, info, await self._policies.acl(info.policies, info.namespace))
            )
        async with self._db.reading() as session:
            record = await repo.find_token(session, digest)
        if record is None:
            return None
        info = token_info(record)
        return Principal(token, info, await self._policies.acl(info.policies, record.namespace))

    async def _open_batch(self, token: str) -> TokenInfo | None:
        """A batch token's values, if it is this cluster's and its parent (if any) still lives: a batch token
        goes with its parent, as in Vault."""
        opened = open_batch_token(self._batch_key, token)
        if opened is None:
            return None
        info, namespace_id = opened
        if info.parent_accessor is None and not info.namespace:
            return info
        async with self._db.reading() as session:
            if info.namespace:
                # Its namespace must be the one it was made in, not one deleted and made again since.
                namespace = await repo.get_namespace(session, info.namespace)
                if namespace is None or namespace.uuid != namespace_id:
                    return None
            if info.parent_accessor is not None:
                parent = await repo.find_token_by_accessor(session, info.parent_accessor)
                if parent is None or (parent.expires_at is not None and parent.expires_at <= utcnow()):
                    return None
        return info

    async def create(
        self, policies: list[str], ttl: timedelta | None, display_name: str = "token", no_default_policy: bool = False
    ) -> tuple[str, TokenInfo]:
        if not policies:
            raise InvalidRequest("at least one policy is required")
        policies = [canonical_name(name) for name in policies]
        for name in policies:
            # A typo must not make a token that silently grants nothing: the policy must exist.
            if not await self._policies.exists(name):
                raise InvalidRequest(
                    "unknown policy; use 'root', '<policy>:<key>' with policy one of "
                    f"{', '.join(POLICY_TEMPLATES)}, or the name of a policy written with sys/policies/acl"
                )
        token, accessor, now = new_token(), new_accessor(), utcnow()
        names = token_policy_names(policies, no_default_policy=no_default_policy)
        info = TokenInfo(accessor, names, display_name, now, now + ttl if ttl else None)
        await self._insert(token, info)
        return token, info

    async def create_child(
        self, parent: Principal, request: TokenRequest, namespace: str = "", role: TokenRole | None = None
    ) -> tuple[str, TokenInfo, list[str]]:
        """auth/token/create (Vault's rules): a non-root parent grants a subset of its own policies (through a
        role: what the role allows) for no longer than its own remaining life; the new token records its
        parent's accessor unless an orphan. A policy that does not exist is allowed with a warning, as in
        Vault. A token made in a namespace below its parent's (which the parent's ACL allowed) carries that
        namespace's policies: no subset rule (the names are another namespace's), and never root."""
        warnings: list[str] = []
        root = parent.acl.root
        # Vault's order: neither a batch token nor one with limited uses makes tokens (it would escape its
        # limits through them).
        if parent.info.batch:
            raise InvalidRequest("batch tokens cannot create more tokens")
        if parent.info.num_uses > 0:
            raise InvalidRequest("restricted use token cannot generate child tokens")
        token_type = request.token_type
        if role is not None:
            token_type = role.token_type_for(request.token_type)
        elif token_type is None:
            token_type = SERVICE
        if token_type not in TOKEN_TYPES:
            raise InvalidRequest("invalid 'token_type' value")
        if namespace != parent.info.namespace:
            # A parent namespace's token names the child namespace's policies freely, but a role still
            # bounds them: its allowed and disallowed lists hold wherever the token is made.
            asked = tuple(sorted(set(request.policies)))
            policies = asked if role is None else role.policies_for(asked, (), True)
            if "root" in policies:
                raise InvalidRequest("root tokens may not be created from a parent namespace")
        elif role is not None:
            policies = role.policies_for(request.policies, parent.info.policies, root)
        else:
            policies = tuple(sorted(set(request.policies or parent.info.policies)))
            if not root and not set(policies) <= set(parent.info.policies):
                raise InvalidRequest("child policies must be subset of parent")
        if "root" in policies and not root:
            raise InvalidRequest("root tokens may not be created without parent token being root")
        policies = token_policy_names(
            policies,
            no_default_policy=request.no_default_policy,
            parent=None if root or namespace != parent.info.namespace else parent.info.policies,
        )
        for name in policies:
            if not await self._policies.exists(name, namespace):
                warnings.append(f'policy "{name}" does not exist')
        if request.num_uses < 0:
            raise InvalidRequest("number of uses cannot be negative")
        period = role.token_period if role is not None and role.token_period else request.period
        explicit_max_ttl = request.explicit_max_ttl
        if role is not None and role.token_explicit_max_ttl:
            explicit_max_ttl = min(explicit_max_ttl or role.token_explicit_max_ttl, role.token_explicit_max_ttl)
        renewable = request.renewable and (role is None or role.renewable)
        if token_type == BATCH:
            if "root" in policies:
                raise InvalidRequest("batch tokens cannot be root tokens")
            for name, value in (("period", period), ("num_uses", request.num_uses)):
                if value:
                    raise InvalidRequest(f'batch tokens cannot have "{name}" set')
            if explicit_max_ttl:
                raise InvalidRequest('batch tokens cannot have "explicit_max_ttl" set')
            renewable = False
        now = utcnow()
        if explicit_max_ttl > self.max_ttl:
            warnings.append(f"explicit_max_ttl of {explicit_max_ttl}s exceeds the maximum of {self.max_ttl}s; capped")
            explicit_max_ttl = self.max_ttl
        if period > self.max_ttl:
            warnings.append(
                f'period of "{human_seconds(period)}" exceeded the effective max_ttl of '
                f'"{human_seconds(self.max_ttl)}"; period value is capped accordingly'
            )
            period = self.max_ttl
        # A periodic token lives one period at a time (its TTL is ignored), never past its explicit max.
        life = period or request.ttl or 0
        if explicit_max_ttl and (not life or life > explicit_max_ttl):
            life = explicit_max_ttl
        if life > self.max_ttl:
            warnings.append(
                f'TTL of "{human_seconds(life)}" exceeded the effective max_ttl of "{human_seconds(self.max_ttl)}"; '
                "TTL value is capped accordingly"
            )
            life = self.max_ttl
        if not life:
            life = min(self.default_ttl, self.max_ttl)  # Vault's default TTL (768h unless set)
        # A periodic token's life is its period, renewed (a role or sudo granted it), not its parent's.
        if not root and not period and parent.info.expires_at is not None:
            remaining = int((parent.info.expires_at - now).total_seconds())
            if not request.ttl and not explicit_max_ttl:
                life = min(life, remaining)
            elif life > remaining:
                raise InvalidRequest(f"the TTL may not exceed the parent token's remaining TTL ({remaining}s)")
        expires_at = now + timedelta(seconds=life)
        display_name = clean_display_name(request.display_name)
        meta = dict(request.meta or {})
        orphan = request.orphan or (role is not None and role.orphan)
        info = TokenInfo(
            "",
            policies,
            display_name,
            now,
            expires_at,
            parent_accessor=None if orphan else parent.info.accessor,
            num_uses=request.num_uses,
            renewable=renewable,
            ttl=life,
            explicit_max_ttl=explicit_max_ttl,
            meta=meta or None,
            namespace=namespace,
            period=period,
            token_type=token_type,
        )
        if token_type == BATCH:
            namespace_id = ""
            if namespace:
                async with self._db.reading() as session:
                    row = await repo.get_namespace(session, namespace)
                namespace_id = row.uuid if row is not None else ""
            token = seal_batch_token(self._batch_key, info, namespace_id)
            if len(token) > MAX_BATCH_TOKEN:
                raise InvalidRequest("too many policies or too much metadata for a batch token")
            return token, info, warnings
        token, info = new_token(), replace(info, accessor=new_accessor())
        await self._insert(token, info)
        return token, info, warnings

    async def _insert(self, token: str, info: TokenInfo) -> None:
        """Store a new token: its HMAC and everything ``info`` says of it, never the token."""
        async with self._db.writing() as session:
            await repo.add_token(
                session,
                accessor=info.accessor,
                token_hmac=self.digest(token),
                display_name=info.display_name,
                created_at=info.created_at,
                expires_at=info.expires_at,
                policies=info.policies,
                parent_accessor=info.parent_accessor,
                num_uses=info.num_uses,
                renewable=info.renewable,
                ttl=info.ttl,
                explicit_max_ttl=info.explicit_max_ttl,
                meta=json.dumps(dict(info.meta or {}), sort_keys=True),
                namespace=info.namespace,
                period=info.period,
            )

    async def find(self, *, token: str | None = None, accessor: str | None = None) -> TokenInfo | None:
        """A live token's stored values by the token or its accessor (None: unknown or expired)."""
        record = None
        if token and is_batch_token(token):
            info = await self._open_batch(token)
            return None if info is None or info.expired(utcnow()) else info
        async with self._db.reading() as session:
            if accessor is not None:
                if ACCESSOR_RE.fullmatch(accessor):
                    record = await repo.find_token_by_accessor(session, accessor)
            elif token and looks_like_token(token):
                record = await repo.find_token(session, self.digest(token))
        if record is None:
            return None
        info = token_info(record)
        return None if info.expired(utcnow()) else info

    async def principal_by_accessor(self, accessor: str) -> Principal | None:
        """What a live token may do, found by its accessor (the principal holds no token); None: unknown."""
        info = await self.find(accessor=accessor)
        if info is None:
            return None
        return Principal("", info, await self._policies.acl(info.policies, info.namespace))

    async def renew(self, accessor: str, increment: int | None) -> tuple[TokenInfo, list[str]]:
        """Vault's renewal: a periodic token gets its period again; another now + increment (or its creation
        TTL), never past creation + the maximum TTL (its explicit max, if lower), with Vault's warning."""
        async with self._db.writing() as session:
            record = await repo.find_token_by_accessor(session, accessor)
            now = utcnow()
            if record is None or (record.expires_at is not None and record.expires_at <= now):
                raise InvalidRequest("invalid token")
            info = token_info(record)
            if not info.renewable or info.endpoint is not None:
                raise InvalidRequest("lease is not renewable")
            if info.expires_at is None:
                return info, []
            warnings: list[str] = []
            explicit_max = timedelta(seconds=info.explicit_max_ttl) if info.explicit_max_ttl else None
            if info.period:
                ttl = info.period  # not capped by the maximum TTL: a periodic token lives while renewed
                max_valid = info.created_at + explicit_max if explicit_max else None
            else:
                ttl = increment or info.ttl
                longest = timedelta(seconds=self.max_ttl)
                max_valid = info.created_at + (min(longest, explicit_max) if explicit_max else longest)
            if max_valid is not None:
                max_valid_ttl = int((max_valid - now).total_seconds())
                if max_valid_ttl < 0:
                    raise InvalidRequest("past the max TTL, cannot renew")
                if ttl > max_valid_ttl:
                    warnings.append(
                        f'TTL of "{human_seconds(ttl)}" exceeded the effective max_ttl of '
                        f'"{human_seconds(max_valid_ttl)}"; TTL value is capped accordingly'
                    )
                    ttl = max_valid_ttl
            expires_at = now + timedelta(seconds=ttl)
            await repo.set_token_expiry(session, accessor, expires_at)
            self._db.changed(session, Change(Kind.TOKEN, accessor))
        return token_info(replace(record, expires_at=expires_at)), warnings

    async def role(self, namespace: str, name: str) -> TokenRole | None:
        async with self._db.reading() as session:
            settings = await repo.get_token_role(session, namespace, name)
        return None if settings is None else TokenRole.from_json(settings)

    async def write_role(self, namespace: str, name: str, role: TokenRole) -> None:
        async with self._db.writing() as session:
            await repo.put_token_role(session, namespace, name, role.to_json())

    async def delete_role(self, namespace: str, name: str) -> None:
        async with self._db.writing() as session:
            await repo.delete_token_role(session, namespace, name)

    async def role_names(self, namespace: str) -> list[str]:
        async with self._db.reading() as session:
            return await repo.token_role_names(session, namespace)

    async def revoke_tree(self, accessor: str) -> list[str]:
        """Revoke a token and every token it made, recursively (orphans stay); the revoked accessors."""
        async with self._db.writing() as session:
            revoked = await self._revoke_tree(session, accessor)
        return revoked

    async def _revoke_tree(self, session, accessor: str) -> list[str]:
        revoked = await repo.delete_tokens(session, [accessor, *await repo.token_descendants(session, accessor)])
        self._db.changed(session, *(Change(Kind.TOKEN, a) for a in revoked))
        return revoked

    async def use(self, principal: Principal) -> bool:
        """Take one use of a token with limited uses (one UPDATE ... RETURNING); at 0 it is revoked. False:
        none was left (a concurrent request took the last one)."""
        if principal.info.num_uses <= 0:
            return True
        async with self._db.writing() as session:
            left = await repo.use_token(session, principal.info.accessor)
            if left == 0:
                await self._revoke_tree(session, principal.info.accessor)
        return left is not None

    async def accessors(self, namespace: str = "") -> list[str]:
        """The accessors of the tokens made in ``namespace``."""
        async with self._db.reading() as session:
            return await repo.token_accessors(session, namespace)

    async def endpoint_token(self, endpoint: str) -> tuple[str, datetime]:
        """The endpoint's current token, or a new one (valid one year) when it has under 30 days left."""
        async with self._db.writing() as session:
            await repo.serialize_writers(session)
            row = await repo.get_endpoint(session, endpoint)
            if row is None:
                raise ConfigError(
                    f"endpoint '{endpoint}' is not in the database: start 'kms-service serve' with this services "
                    "YAML first (relationships never adds or removes endpoints)"
                )
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
        """Revoke by accessor or by the token itself, with the tokens it made (as Vault's revoke)."""
        async with self._db.writing() as session:
            if ACCESSOR_RE.fullmatch(value):
                accessor: str | None = value
            elif looks_like_token(value):
                accessor = await repo.token_accessor(session, self.digest(value))
            else:
                raise InvalidRequest("not a token or an accessor")
            revoked = await self._revoke_tree(session, accessor) if accessor is not None else []
        return accessor in revoked

    async def list(self) -> list[repo.TokenRecord]:
        return await list_tokens(self._db)

    async def count_expiring(self, within: timedelta) -> int:
        """Live tokens that expire within ``within`` from now (the metrics' gauge)."""
        now = utcnow()
        async with self._db.reading() as session:
            return await repo.count_tokens_expiring(session, now, now + within)

    async def reap(self) -> int:
        async with self._db.writing() as session:
            accessors = await repo.delete_expired_tokens(session, utcnow())
            # An expired token's children go with it (as in Vault).
            for accessor in list(accessors):
                accessors += await repo.delete_tokens(session, await repo.token_descendants(session, accessor))
            self._db.changed(session, *(Change(Kind.TOKEN, accessor) for accessor in accessors))
        if accessors:
            log.info("reaped %d expired token(s)", len(accessors))
        return len(accessors)


async def list_tokens(db: Database) -> list[repo.TokenRecord]:
    """Every token's accessor, policies and expiry (never the token); needs no master key."""
    async with db.reading() as session:
        return await repo.list_tokens(session)
