"""What the operators' views say (``kms_keys``, ``kms_key_versions``, ``kms_tokens``, ``kms_endpoints``; made by
revision 0028), as Python values: for the CLI's ``keys``, ``endpoints`` and ``inspect`` commands.

These read the views only, never a table: what the commands show is what ``sqlite3`` or ``psql`` shows, and
nothing secret can reach them. Columns are typed here so SQLite's text times and 0/1 booleans come back as
aware datetimes and bools, as PostgreSQL's do.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Boolean, Integer, String, TableClause, Text, column, select, table
from sqlalchemy.ext.asyncio import AsyncSession

from kms_service.storage.column_types import UTCDateTime

KEYS = table(
    "kms_keys",
    column("mount", String),
    column("name", String),
    column("type", String),
    column("latest_version", Integer),
    column("version_count", Integer),
    column("min_decryption_version", Integer),
    column("min_encryption_version", Integer),
    column("min_available_version", Integer),
    column("created_at", UTCDateTime),
    column("last_rotated_at", UTCDateTime),
    column("version_age_days", Integer),
    column("auto_rotate_period", Integer),
    column("exportable", Boolean),
    column("allow_plaintext_backup", Boolean),
    column("deletion_allowed", Boolean),
    column("derived", Boolean),
    column("convergent_encryption", Boolean),
    column("soft_deleted", Boolean),
    column("source", String),
    column("retain_versions", Integer),
    column("custom_metadata", Text),
    column("updated_at", UTCDateTime),
)
KEY_VERSIONS = table(
    "kms_key_versions",
    column("mount", String),
    column("key_name", String),
    column("type", String),
    column("version", Integer),
    column("created_at", UTCDateTime),
    column("is_latest", Boolean),
    column("decrypts", Boolean),
    column("master_key_id", String),
    column("public_key", Text),
    column("encryptions", Integer),
    column("signatures", Integer),
    column("last_used_at", UTCDateTime),
)
TOKENS = table(
    "kms_tokens",
    column("accessor", String),
    column("display_name", String),
    column("endpoint", String),
    column("policies", Text),
    column("created_at", UTCDateTime),
    column("expires_at", UTCDateTime),
    column("expires_in_days", Integer),
    column("parent_accessor", String),
    column("num_uses", Integer),
    column("renewable", Boolean),
    column("ttl", Integer),
    column("explicit_max_ttl", Integer),
)
ENDPOINTS = table(
    "kms_endpoints",
    column("endpoint", String),
    column("policy", String),
    column("key_name", String),
    column("policy_name", String),
    column("token_accessor", String),
    column("token_expires_at", UTCDateTime),
    column("token_expires_in_days", Integer),
    column("token_count", Integer),
    column("created_at", UTCDateTime),
)

Row = dict[str, Any]


async def _rows(session: AsyncSession, view: TableClause, *where: Any, order_by: tuple[Any, ...] = ()) -> list[Row]:
    statement = select(*view.columns).where(*where).order_by(*order_by)
    return [dict(row._mapping) for row in await session.execute(statement)]


async def keys(session: AsyncSession, name: str | None = None, mount: str | None = None) -> list[Row]:
    """Every key (of ``mount``, when given), or the key ``name``."""
    where = [KEYS.c.name == name] if name is not None else []
    if mount is not None:
        where.append(KEYS.c.mount == mount)
    return await _rows(session, KEYS, *where, order_by=(KEYS.c.mount, KEYS.c.name))


async def key_versions(session: AsyncSession, key_name: str | None = None, mount: str | None = None) -> list[Row]:
    where = [KEY_VERSIONS.c.key_name == key_name] if key_name is not None else []
    if mount is not None:
        where.append(KEY_VERSIONS.c.mount == mount)
    order = (KEY_VERSIONS.c.mount, KEY_VERSIONS.c.key_name, KEY_VERSIONS.c.version)
    return await _rows(session, KEY_VERSIONS, *where, order_by=order)


async def tokens(session: AsyncSession, expiring_within: timedelta | None = None) -> list[Row]:
    """Every token; or those that expire within ``expiring_within`` from now (never-expiring ones never do)."""
    where = ()
    if expiring_within is not None:
        where = (TOKENS.c.expires_at.is_not(None), TOKENS.c.expires_at < datetime.now(UTC) + expiring_within)
    return await _rows(session, TOKENS, *where, order_by=(TOKENS.c.expires_at, TOKENS.c.accessor))


async def token(session: AsyncSession, accessor: str) -> Row | None:
    """One token by its accessor (None: unknown)."""
    rows = await _rows(session, TOKENS, TOKENS.c.accessor == accessor)
    return rows[0] if rows else None


async def endpoint_grants(session: AsyncSession, key_name: str | None = None) -> list[Row]:
    where = (ENDPOINTS.c.key_name == key_name,) if key_name is not None else ()
    return await _rows(session, ENDPOINTS, *where, order_by=(ENDPOINTS.c.endpoint, ENDPOINTS.c.policy_name))


def endpoints(grants: list[Row]) -> list[Row]:
    """One entry per endpoint: its grants (policy, key) and its newest token's accessor and expiry."""
    result: dict[str, Row] = {}
    for row in grants:
        entry = result.setdefault(
            row["endpoint"],
            {
                "endpoint": row["endpoint"],
                "grants": [],
                "token_accessor": row["token_accessor"],
                "token_expires_at": row["token_expires_at"],
                "token_expires_in_days": row["token_expires_in_days"],
                "token_count": row["token_count"],
                "created_at": row["created_at"],
            },
        )
        if row["policy_name"] is not None:
            entry["grants"].append({"policy": row["policy"], "key": row["key_name"], "policy_name": row["policy_name"]})
    return list(result.values())
