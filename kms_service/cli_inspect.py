"""The operator's read-only commands: ``keys list``, ``keys show NAME``, ``endpoints list``, ``inspect``.

They read the operators' views (``storage/reports.py``) and nothing else, through the same read-only opening
as ``token list``: the database is never created nor migrated, no master key is needed, and a PostgreSQL role
granted SELECT on the views and ``alembic_version`` is enough. Tables for people (``rich``), ``--json`` for
scripts (times in ISO 8601, UTC).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import click
from rich import box
from rich.console import Console
from rich.table import Table

from kms_service.cli_common import database_options, reading
from kms_service.mounts import DEFAULT_MOUNT
from kms_service.storage import reports
from kms_service.tokens import ACCESSOR_RE

Row = dict[str, Any]


def json_option(func: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--json", "as_json", is_flag=True, help="Print JSON (for scripts) instead of tables.")(func)


def _console() -> Console:
    # Piped output (grep, less) gets wide lines rather than cells wrapped at 80 columns.
    wide = not sys.stdout.isatty() and "COLUMNS" not in os.environ
    return Console(width=200 if wide else None, highlight=False, soft_wrap=False)


def _json_value(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


def _print_json(document: Any) -> None:
    click.echo(json.dumps(document, indent=2, default=_json_value))


def _when(value: datetime | None, none: str = "-") -> str:
    return value.strftime("%Y-%m-%d %H:%M") if value is not None else none


def _days(value: int | None, none: str = "-") -> str:
    return none if value is None else f"{value} d"


def _flags(row: Row) -> str:
    names = ("exportable", "allow_plaintext_backup", "deletion_allowed", "derived", "convergent_encryption")
    flags = [name for name in names if row[name]]
    if row["soft_deleted"]:
        flags.insert(0, "SOFT-DELETED")
    return ", ".join(flags) or "-"


def _table(title: str | None, columns: Iterable[str]) -> Table:
    table = Table(title=title, box=box.SIMPLE_HEAD, title_justify="left", title_style="bold")
    for name in columns:
        table.add_column(name, overflow="fold")
    return table


def _keys_table(rows: list[Row], title: str | None = None) -> Table:
    table = _table(
        title,
        ("mount", "name", "type", "version", "created (UTC)", "last rotated", "newest version", "source", "flags"),
    )
    for row in rows:
        table.add_row(
            f"{row['mount']}/",
            row["name"],
            row["type"],
            str(row["latest_version"]),
            _when(row["created_at"]),
            _when(row["last_rotated_at"], "never"),
            f"{row['version_age_days']} d old",
            row["source"],
            _flags(row),
        )
    return table


def _versions_table(rows: list[Row], title: str | None = None, with_key: bool = True) -> Table:
    columns = (
        "key",
        "version",
        "created (UTC)",
        "latest",
        "decrypts",
        "encryptions",
        "signatures",
        "last used (UTC)",
        "master key id",
    )
    table = _table(title, columns if with_key else columns[1:])
    for row in rows:
        cells = [
            str(row["version"]),
            _when(row["created_at"]),
            "yes" if row["is_latest"] else "",
            "yes" if row["decrypts"] else "no",
            str(row["encryptions"]),
            str(row["signatures"]),
            _when(row["last_used_at"], "never"),
            row["master_key_id"],
        ]
        table.add_row(*([row["key_name"], *cells] if with_key else cells))
    return table


def _tokens_table(rows: list[Row], title: str | None = None) -> Table:
    table = _table(title, ("accessor", "name", "endpoint", "policies", "expires (UTC)", "in"))
    for row in rows:
        table.add_row(
            row["accessor"],
            row["display_name"],
            row["endpoint"] or "-",
            row["policies"] or "-",
            _when(row["expires_at"], "never"),
            _days(row["expires_in_days"]),
        )
    return table


def _endpoints_table(entries: list[Row], title: str | None = None) -> Table:
    table = _table(title, ("endpoint", "grants", "token accessor", "token expires (UTC)", "in", "tokens"))
    for entry in entries:
        table.add_row(
            entry["endpoint"],
            "\n".join(grant["policy_name"] for grant in entry["grants"]) or "-",
            entry["token_accessor"] or "none yet",
            _when(entry["token_expires_at"]),
            _days(entry["token_expires_in_days"]),
            str(entry["token_count"]),
        )
    return table


@click.group()
def keys() -> None:
    """Keys: list, show (read-only); rotate, config (changes)."""


@keys.command("list")
@json_option
@database_options
def keys_list(as_json: bool, database_url: str | None, data_dir: Path) -> None:
    """Every key: type, versions, creation and last rotation, settings."""

    async def read(db: Any) -> list[Row]:
        async with db.reading() as session:
            return await reports.keys(session)

    rows = reading(database_url, data_dir, read)
    if as_json:
        _print_json(rows)
        return
    _console().print(_keys_table(rows) if rows else "no keys")


@keys.command("show")
@click.argument("name")
@click.option(
    "--mount", default=DEFAULT_MOUNT, show_default=True, help="The transit mount holding the key (e.g. teams/eu)."
)
@json_option
@database_options
def keys_show(name: str, mount: str, as_json: bool, database_url: str | None, data_dir: Path) -> None:
    """Key NAME: its settings, every version, the endpoints granted it and the tokens whose policies name it."""
    mount = mount.strip("/")

    async def read(db: Any) -> Row | None:
        async with db.reading() as session:
            found = await reports.keys(session, name, mount)
            if not found:
                return None
            tokens, grants = [], []
            if mount == DEFAULT_MOUNT:  # built-in policies and endpoint grants name transit/'s keys only
                tokens = [
                    row
                    for row in await reports.tokens(session)
                    if row["endpoint"] is None
                    and any(policy.endswith(f":{name}") for policy in (row["policies"] or "").split(", "))
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
        _print_json(document)
        return
    key = document["key"]
    console = _console()
    settings = _table(f"key {key['name']}", ("setting", "value"))
    for field, value in key.items():
        if isinstance(value, datetime):
            value = _when(value)
        settings.add_row(field, "-" if value is None else str(value).lower() if isinstance(value, bool) else str(value))
    console.print(settings)
    console.print(_versions_table(document["versions"], "versions", with_key=False))
    grants = _table("endpoints granted it", ("endpoint", "policy", "token accessor", "token expires (UTC)"))
    for row in document["grants"]:
        grants.add_row(
            row["endpoint"], row["policy"], row["token_accessor"] or "none yet", _when(row["token_expires_at"])
        )
    console.print(grants if document["grants"] else "no endpoint is granted this key")
    if document["tokens"]:
        console.print(_tokens_table(document["tokens"], "operator tokens whose policies name it"))


@click.group()
def endpoints() -> None:
    """Endpoints of the services YAML: list (read-only)."""


@endpoints.command("list")
@json_option
@database_options
def endpoints_list(as_json: bool, database_url: str | None, data_dir: Path) -> None:
    """Each endpoint, its grants, and its newest token's accessor and expiry."""

    async def read(db: Any) -> list[Row]:
        async with db.reading() as session:
            return reports.endpoints(await reports.endpoint_grants(session))

    entries = reading(database_url, data_dir, read)
    if as_json:
        _print_json(entries)
        return
    _console().print(_endpoints_table(entries) if entries else "no endpoints")


@click.command("lookup")
@click.argument("accessor")
@json_option
@database_options
def token_lookup(accessor: str, as_json: bool, database_url: str | None, data_dir: Path) -> None:
    """Token ACCESSOR's stored values: name, policies, endpoint, creation, expiry, parent, uses, TTLs (never
    the token). Expired tokens not yet reaped are shown as expired."""
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
    row["expired"] = row["expires_at"] is not None and row["expires_at"] <= datetime.now(UTC)
    if as_json:
        _print_json(row)
        return
    table = _table(f"token {accessor}", ("field", "value"))
    for field, value in row.items():
        if isinstance(value, datetime):
            value = _when(value) + " UTC"
        elif isinstance(value, bool):
            value = str(value).lower()
        table.add_row(field, "-" if value is None or value == "" else str(value))
    _console().print(table)


@click.command()
@click.option(
    "--days",
    type=click.IntRange(min=0),
    default=30,
    show_default=True,
    help="Show tokens that expire within this many days.",
)
@json_option
@database_options
def inspect(days: int, as_json: bool, database_url: str | None, data_dir: Path) -> None:
    """The whole picture: keys, their versions, endpoints, and tokens that expire within --days."""

    async def read(db: Any) -> Row:
        async with db.reading() as session:
            return {
                "keys": await reports.keys(session),
                "versions": await reports.key_versions(session),
                "endpoints": reports.endpoints(await reports.endpoint_grants(session)),
                "tokens_total": len(await reports.tokens(session)),
                "expiring_tokens": await reports.tokens(session, timedelta(days=days)),
            }

    document = reading(database_url, data_dir, read)
    if as_json:
        _print_json({**document, "expiring_within_days": days})
        return
    console = _console()
    console.print(
        f"{len(document['keys'])} key(s), {len(document['versions'])} version(s), "
        f"{len(document['endpoints'])} endpoint(s), {document['tokens_total']} token(s)"
    )
    if document["keys"]:
        console.print(_keys_table(document["keys"], "keys"))
        console.print(_versions_table(document["versions"], "versions"))
    if document["endpoints"]:
        console.print(_endpoints_table(document["endpoints"], "endpoints"))
    expiring = document["expiring_tokens"]
    if expiring:
        console.print(_tokens_table(expiring, f"tokens expiring within {days} days"))
    else:
        console.print(f"no token expires within {days} days")
