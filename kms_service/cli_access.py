"""Access: operator tokens (``token create``, ``revoke``, ``list``; ``lookup`` is cli_inspect.py's) and ACL
policies (``policy write``, ``read``, ``list``, ``delete``)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from kms_service.cli_common import (
    database_options,
    default_token_ttl_option,
    max_token_ttl_option,
    reading,
    with_kms,
)
from kms_service.cli_inspect import TOKEN_COLUMNS, token_rows
from kms_service.cli_output import json_option, output_options, print_json, table
from kms_service.mounts import DEFAULT_MOUNT

if TYPE_CHECKING:
    from kms_service.service import KMS, PolicyService
    from kms_service.tokens import TokenInfo


@click.group()
def token() -> None:
    """Operator tokens: create, list, lookup, revoke."""


@token.command("create")
@click.option(
    "--policy",
    "policies",
    envvar="KMS_POLICY",
    show_envvar=True,
    multiple=True,
    required=True,
    help="'root', or '<policy>:<key>' with policy admin|sign|verify|encrypt|decrypt|rewrap. Repeatable.",
)
@click.option(
    "--ttl",
    envvar="KMS_TTL",
    show_envvar=True,
    default=None,
    help="Lifetime, e.g. 2s, 1h, 8760h (default: --default-token-ttl).",
)
@click.option(
    "--display-name",
    envvar="KMS_DISPLAY_NAME",
    show_envvar=True,
    default="token",
    show_default=True,
    help="A name for the token, shown by token list and lookup.",
)
@click.option(
    "--no-default-policy",
    envvar="KMS_NO_DEFAULT_POLICY",
    show_envvar=True,
    is_flag=True,
    help="Leave out the default policy (every token but root has it otherwise; see docs/policies.md).",
)
@max_token_ttl_option
@default_token_ttl_option
@database_options
def token_create(
    policies: tuple[str, ...],
    ttl: str | None,
    display_name: str,
    no_default_policy: bool,
    max_token_ttl: int,
    default_token_ttl: int,
    database_url: str | None,
    data_dir: Path,
) -> None:
    """Create a token; the token itself is printed on the last line, and shown only this once. A policy
    '<policy>:<key>' must name a key of transit/ that exists."""
    from kms_service.config import parse_duration
    from kms_service.errors import ConfigError

    try:
        seconds = parse_duration(ttl) if ttl is not None else min(default_token_ttl, max_token_ttl)
    except ConfigError as exc:
        raise click.BadParameter(exc.message, param_hint="--ttl") from None
    if seconds > max_token_ttl:
        raise click.BadParameter(
            f"longer than the maximum token TTL ({max_token_ttl} s; --max-token-ttl)", param_hint="--ttl"
        )

    async def create(kms: KMS) -> tuple[str, TokenInfo]:
        from kms_service.tokens import clean_cli_display_name

        await _refuse_missing_keys(kms, policies)
        return await kms.tokens.create(
            list(policies),
            timedelta(seconds=seconds),
            clean_cli_display_name(display_name),
            no_default_policy=no_default_policy,
        )

    secret, info = with_kms(database_url, data_dir, create)
    click.echo(f"accessor: {info.accessor}")
    click.echo(f"policies: {', '.join(info.policies)}")
    click.echo(f"expires:  {info.expires_at.isoformat() if info.expires_at else 'never'}")
    click.echo(secret)


async def _refuse_missing_keys(kms: KMS, policies: tuple[str, ...]) -> None:
    """A built-in policy naming a key that does not exist would grant nothing: a typo, refused."""
    from kms_service.acl import POLICY_TEMPLATES
    from kms_service.errors import InvalidRequest
    from kms_service.keyring import validate_key_name

    keys = kms.mounts.key_service(await kms.mounts.read(DEFAULT_MOUNT))
    for name in policies:
        kind, colon, key = name.partition(":")
        if not colon or kind not in POLICY_TEMPLATES:
            continue  # root or a written policy: the token service checks it exists
        validate_key_name(key)
        if await keys.get(key, ()) is None:
            raise InvalidRequest(
                f"policy {name} names no key: there is no key {key} in {DEFAULT_MOUNT}/ "
                f"(see 'kms-service keys list'; 'kms-service keys create {key}' makes one)"
            )


@token.command("revoke")
@click.argument("accessor_or_token")
@database_options
def token_revoke(accessor_or_token: str, database_url: str | None, data_dir: Path) -> None:
    """Revoke a token by its accessor (see 'token list') or by the token itself."""

    if not with_kms(database_url, data_dir, lambda kms: kms.tokens.revoke(accessor_or_token)):
        raise click.ClickException("no such token")
    click.echo("revoked")


@token.command("list")
@output_options
@database_options
def token_list(as_json: bool, wide: bool, database_url: str | None, data_dir: Path) -> None:
    """Accessors, names, endpoints, policies and expiry of every token (never the tokens), soonest to expire
    first."""
    rows = reading(database_url, data_dir, token_rows)
    if as_json:
        print_json(rows)
        return
    table(TOKEN_COLUMNS, rows, wide=wide, empty="no tokens")


@click.group()
def policy() -> None:
    """ACL policy documents (Vault's HCL or JSON): write, read, list, delete."""


def _policies(db: Any) -> PolicyService:
    from kms_service.service import Invalidator, PolicyService

    return PolicyService(db, Invalidator())


@policy.command("write")
@click.argument("name")
@click.argument("document", type=click.File("r", encoding="utf-8"))
@database_options
def policy_write(name: str, document: Any, database_url: str | None, data_dir: Path) -> None:
    """Write policy NAME from DOCUMENT (a file, or - for standard input)."""
    text = document.read()
    with_kms(database_url, data_dir, lambda kms: kms.policies.write(name, text))
    click.echo(f"Success! Uploaded policy: {name}")


@policy.command("read")
@click.argument("name")
@database_options
def policy_read(name: str, database_url: str | None, data_dir: Path) -> None:
    """Print policy NAME's document."""
    text = reading(database_url, data_dir, lambda db: _policies(db).read(name))
    if text is None:
        raise click.ClickException(f"no policy named {name}")
    click.echo(text)


@policy.command("list")
@json_option
@database_options
def policy_list(as_json: bool, database_url: str | None, data_dir: Path) -> None:
    """Every policy's name, one per line."""
    names = reading(database_url, data_dir, lambda db: _policies(db).names())
    if as_json:
        print_json(list(names))
        return
    for name in names:
        click.echo(name)


@policy.command("delete")
@click.argument("name")
@database_options
def policy_delete(name: str, database_url: str | None, data_dir: Path) -> None:
    """Delete policy NAME (tokens that name it keep the name; it grants nothing until written again)."""
    with_kms(database_url, data_dir, lambda kms: kms.policies.delete(name))
    click.echo(f"Success! Deleted policy: {name}")
