"""The operator's read-only commands: ``keys list``, ``keys show NAME``, ``endpoints list``, ``inspect``.

They read the operators' views (``storage/reports.py``) and nothing else, through the same read-only opening
as ``token list``: the database is never created nor migrated, no master key is needed, and a PostgreSQL role
granted SELECT on the views and ``alembic_version`` is enough. Tables for people and tab-separated lines
for pipes, ``--json`` for scripts (``cli_output.py``).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import click

from kms_service.cli_common import database_options, reading
from kms_service.cli_output import Column, output_options, print_json, record, table
from kms_service.mounts import DEFAULT_MOUNT

Row = dict[str, Any]


def _days(value: int | None) -> str | None:
    return None if value is None else f"{value} d"


def _flags(row: Row) -> str | None:
    names = ("exportable", "allow_plaintext_backup", "deletion_allowed", "derived", "convergent_encryption")
    flags = [name for name in names if row[name]]
    if row["soft_deleted"]:
        flags.insert(0, "SOFT-DELETED")
    return ", ".join(flags) or None


def key_row(row: Row) -> Row:
    """A row of the keys view as the API shows a key: custom_metadata a JSON object (the view holds its text)."""
    metadata = row.get("custom_metadata")
    return {**row, "custom_metadata": json.loads(metadata) if isinstance(metadata, str) and metadata else None}


def token_row(row: Row) -> Row:
    """A row of the tokens view as the API shows a token: its policies a list (the view joins them)."""
    policies = row.get("policies")
    return {**row, "policies": policies.split(", ") if policies else []}


KEY_COLUMNS = (
    Column("mount", lambda row: f"{row['mount']}/", identifier=True),
    Column("name", "name", identifier=True),
    Column("type", "type"),
    Column("version", "latest_version"),
    Column("created (UTC)", "created_at", optional=True),
    Column("last rotated (UTC)", lambda row: row["last_rotated_at"] or "never", optional=True),
    Column("newest version", lambda row: f"{row['version_age_days']} d old", optional=True),
    Column("source", "source", optional=True),
    Column("flags", _flags),
)
VERSION_COLUMNS = (
    Column("version", "version", identifier=True),
    Column("created (UTC)", "created_at"),
    Column("latest", lambda row: "yes" if row["is_latest"] else "no", optional=True),
    Column("decrypts", lambda row: "yes" if row["decrypts"] else "no"),
    Column("encryptions", "encryptions"),
    Column("signatures", "signatures"),
    Column("last used (UTC)", lambda row: row["last_used_at"] or "never", optional=True),
    Column("master key id", "master_key_id", optional=True),
)
KEY_VERSION_COLUMNS = (Column("key", "key_name", identifier=True), *VERSION_COLUMNS)
TOKEN_COLUMNS = (
    Column("accessor", "accessor", identifier=True),
    Column("name", "display_name"),
    Column("endpoint", "endpoint"),
    Column("policies", lambda row: ", ".join(row["policies"])),
    Column("expires (UTC)", lambda row: row["expires_at"] or "never", optional=True),
    Column("in", lambda row: _days(row["expires_in_days"])),
)
ENDPOINT_COLUMNS = (
    Column("endpoint", "endpoint", identifier=True),
    Column("grants", lambda row: ", ".join(grant["policy_name"] for grant in row["grants"])),
    Column("token accessor", lambda row: row["token_accessor"] or "none yet", identifier=True),
    Column("token expires (UTC)", "token_expires_at", optional=True),
    Column("in", lambda row: _days(row["token_expires_in_days"]), optional=True),
    Column("tokens", "token_count"),
)
GRANT_COLUMNS = (
    Column("endpoint", "endpoint", identifier=True),
    Column("policy", "policy"),
    Column("token accessor", lambda row: row["token_accessor"] or "none yet", identifier=True),
    Column("token expires (UTC)", "token_expires_at", optional=True),
)


@click.group()
def keys() -> None:
    """Keys: list, show (read-only); create, rotate, config, delete (changes, through the service)."""


async def _keys_rows(db: Any, name: str | None = None, mount: str | None = None) -> list[Row]:
    from kms_service.storage import reports

    async with db.reading() as session:
        return [key_row(row) for row in await reports.keys(session, name, mount)]


@keys.command("list")
@output_options
@database_options
def keys_list(as_json: bool, wide: bool, database_url: str | None, data_dir: Path) -> None:
    """Every key: type, versions, creation and last rotation, settings."""
    rows = reading(database_url, data_dir, _keys_rows)
    if as_json:
        print_json(rows)
        return
    table(KEY_COLUMNS, rows, wide=wide, empty="no keys")


@keys.command("show")
@click.argument("name")
@click.option(
    "--mount", default=DEFAULT_MOUNT, show_default=True, help="The transit mount holding the key (e.g. teams/eu)."
)
@output_options
@database_options
def keys_show(name: str, mount: str, as_json: bool, wide: bool, database_url: str | None, data_dir: Path) -> None:
    """Key NAME: its settings, every version, the endpoints granted it and the tokens whose policies name it."""
    from kms_service.storage import reports

    mount = mount.strip("/")

    async def read(db: Any) -> Row | None:
        found = await _keys_rows(db, name, mount)
        if not found:
            return None
        async with db.reading() as session:
            tokens, grants = [], []
            if mount == DEFAULT_MOUNT:  # built-in policies and endpoint grants name transit/'s keys only
                tokens = [
                    row
                    for row in map(token_row, await reports.tokens(session))
                    if row["endpoint"] is None and any(policy.endswith(f":{name}") for policy in row["policies"])
                ]
                grants = await reports.endpoint_grants(session, name)
            return {
                "key": found[0],
                "versions": await reports.key_versions(session, name, mount),
                "grants": grants,
                "tokens": tokens,
            }

    document = reading(database_url, data_dir, read)
    if document is None:
        raise click.ClickException(f"no key named {name} in {mount}/")
    if as_json:
        print_json(document)
        return
    record(document["key"].items(), wide=wide, title=f"key {name} in {mount}/")
    table(VERSION_COLUMNS, document["versions"], wide=wide, title="\nversions")
    table(GRANT_COLUMNS, document["grants"], wide=wide, title="\nendpoints granted it", empty="none")
    if document["tokens"]:
        table(TOKEN_COLUMNS, document["tokens"], wide=wide, title="\noperator tokens whose policies name it")


@click.group()
def endpoints() -> None:
    """Endpoints of the services YAML: list (read-only)."""


@endpoints.command("list")
@output_options
@database_options
def endpoints_list(as_json: bool, wide: bool, database_url: str | None, data_dir: Path) -> None:
    """Each endpoint, its grants, and its newest token's accessor and expiry."""
    from kms_service.storage import reports

    async def read(db: Any) -> list[Row]:
        async with db.reading() as session:
            return reports.endpoints(await reports.endpoint_grants(session))

    entries = reading(database_url, data_dir, read)
    if as_json:
        print_json(entries)
        return
    table(ENDPOINT_COLUMNS, entries, wide=wide, empty="no endpoints")


def lookup_row(row: Row, now: datetime) -> Row:
    """A row of the tokens view as Vault's token lookup gives the times: ``ttl`` the seconds left (0: never
    expires), ``creation_ttl`` the lifetime it was given; and whether it has expired (not yet reaped)."""
    expires_at, created_at = row["expires_at"], row["created_at"]
    creation_ttl = row["ttl"] or (int((expires_at - created_at).total_seconds()) if expires_at else 0)
    ttl = max(0, round((expires_at - now).total_seconds())) if expires_at is not None else 0
    return {**row, "ttl": ttl, "creation_ttl": creation_ttl, "expired": expires_at is not None and expires_at <= now}


async def token_rows(db: Any) -> list[Row]:
    """Every token (never the token itself), soonest to expire first."""
    from kms_service.storage import reports

    async with db.reading() as session:
        return [token_row(row) for row in await reports.tokens(session)]


@click.command("lookup")
@click.argument("accessor")
@output_options
@database_options
def token_lookup(accessor: str, as_json: bool, wide: bool, database_url: str | None, data_dir: Path) -> None:
    """Token ACCESSOR's stored values: name, policies, endpoint, creation, expiry, parent, uses, TTLs (never
    the token). ttl is the seconds left, as Vault's lookup gives it. Expired tokens not yet reaped are shown
    as expired."""
    from kms_service.storage import reports
    from kms_service.tokens import ACCESSOR_RE

    if not ACCESSOR_RE.fullmatch(accessor):
        raise click.BadParameter(
            "not a token accessor (24 hexadecimal digits; see 'token list')", param_hint="ACCESSOR"
        )

    async def read(db: Any) -> Row | None:
        async with db.reading() as session:
            return await reports.token(session, accessor)

    row = reading(database_url, data_dir, read)
    if row is None:
        raise click.ClickException("no token with that accessor")
    row = lookup_row(token_row(row), datetime.now(UTC))
    if as_json:
        print_json(row)
        return
    record(row.items(), wide=wide)


@click.command()
@click.option(
    "--days",
    type=click.IntRange(min=0),
    default=30,
    show_default=True,
    help="Show tokens that expire within this many days.",
)
@output_options
@database_options
def inspect(days: int, as_json: bool, wide: bool, database_url: str | None, data_dir: Path) -> None:
    """The whole picture: keys, their versions, endpoints, and tokens that expire within --days."""
    from kms_service.storage import reports

    async def read(db: Any) -> Row:
        keys = await _keys_rows(db)
        async with db.reading() as session:
            return {
                "keys": keys,
                "versions": await reports.key_versions(session),
                "endpoints": reports.endpoints(await reports.endpoint_grants(session)),
                "tokens_total": len(await reports.tokens(session)),
                "expiring_tokens": [token_row(row) for row in await reports.tokens(session, timedelta(days=days))],
            }

    document = reading(database_url, data_dir, read)
    if as_json:
        print_json({**document, "expiring_within_days": days})
        return
    click.echo(
        f"{len(document['keys'])} key(s), {len(document['versions'])} version(s), "
        f"{len(document['endpoints'])} endpoint(s), {document['tokens_total']} token(s)"
    )
    if document["keys"]:
        table(KEY_COLUMNS, document["keys"], wide=wide, title="\nkeys")
        table(KEY_VERSION_COLUMNS, document["versions"], wide=wide, title="\nversions")
    if document["endpoints"]:
        table(ENDPOINT_COLUMNS, document["endpoints"], wide=wide, title="\nendpoints")
    expiring = document["expiring_tokens"]
    if expiring:
        table(TOKEN_COLUMNS, expiring, wide=wide, title=f"\ntokens expiring within {days} days")
    else:
        click.echo(f"\nno token expires within {days} days")
