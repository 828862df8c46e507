"""``migrate`` (the schema), and ``migrate-from`` / ``migrate-to``: keys moved out of or into a running Vault
or OpenBao, over its HTTP API. ``service.migration`` (and aiohttp with it) is imported inside the commands
that use it: every other command starts faster without it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from kms_service.cli_common import Progress, checked_database_url, database_options, run, with_kms

if TYPE_CHECKING:
    from kms_service.service import KMS


@click.command()
@database_options
def migrate(database_url: str | None, data_dir: Path) -> None:
    """Upgrade the database schema to the newest revision (Alembic 'upgrade head')."""
    from kms_service.serving import safe_url
    from kms_service.storage import migrate as migrations
    from kms_service.storage.database import create_engine

    url = checked_database_url(database_url, data_dir)

    async def upgrade() -> None:
        engine = create_engine(url)
        try:
            await migrations.upgrade(engine)
        finally:
            await engine.dispose()

    run(upgrade())
    click.echo(f"database {safe_url(url)} is at the newest schema revision")


def source_options(func: Callable[..., Any]) -> Callable[..., Any]:
    func = click.option(
        "--dry-run", is_flag=True, help="Read both sides and report what would happen; change nothing."
    )(func)
    func = click.option(
        "--key", "key_names", multiple=True, help="Only this key (repeatable; default: every key in the mount)."
    )(func)
    func = click.option(
        "--mount", default="transit", show_default=True, help="The transit mount on the Vault/OpenBao side."
    )(func)
    func = click.option(
        "--token",
        envvar=["VAULT_TOKEN", "BAO_TOKEN"],
        required=True,
        help="A Vault/OpenBao token (or VAULT_TOKEN / BAO_TOKEN). Never printed.",
    )(func)
    return click.option(
        "--addr",
        envvar=["VAULT_ADDR", "BAO_ADDR"],
        required=True,
        help="The Vault/OpenBao server, e.g. http://127.0.0.1:8200 (or VAULT_ADDR / BAO_ADDR).",
    )(func)


def _check_source(addr: str, token: str, mount: str) -> None:
    """Fail on an unreachable server, a bad token or an unknown mount before this database is opened."""
    from kms_service.service import migration  # with aiohttp: imported by these commands alone (start-up)

    async def check() -> None:
        async with migration.VaultClient(addr, token) as client:
            await client.check(mount)

    run(check())


def _report(reports: list[Any], dry_run: bool) -> None:
    from kms_service.service import migration  # with aiohttp: imported by these commands alone (start-up)

    for report in reports:
        click.echo(report.line(dry_run))
    click.echo(migration.summary(reports, dry_run))
    problems = [r for r in reports if r.outcome in migration.PROBLEMS]
    if problems:
        raise click.exceptions.Exit(2)


@click.command("migrate-from")
@source_options
@click.option("--to-mount", default="transit", show_default=True, help="This service's mount to move the keys into.")
@click.option("--yaml", "print_yaml", is_flag=True, help="Also print a services YAML with endpoint grants for them.")
@database_options
def migrate_from(
    addr: str,
    token: str,
    mount: str,
    key_names: tuple[str, ...],
    dry_run: bool,
    to_mount: str,
    print_yaml: bool,
    database_url: str | None,
    data_dir: Path,
) -> None:
    """Move keys out of a running Vault or OpenBao into this service's database, keeping every version
    number, min version, HMAC key and setting (so every vault:v<N>: value made there works here).

    Safe to run again: keys already here and unchanged are skipped; keys rotated on the source since are
    updated. Exit status 2 when a key could not be moved (the report says why)."""
    from kms_service.service import migration  # with aiohttp: imported by these commands alone (start-up)

    mount = mount.strip("/")
    _check_source(addr, token, mount)

    async def run(kms: KMS) -> list[Any]:
        keys = kms.mounts.key_service(await kms.mounts.read(to_mount))
        async with migration.VaultClient(addr, token) as client:
            listed = await client.check(mount)
            names = list(key_names) or listed
            what = f"{len(names)} key(s) in {client.shown}/v1/{mount}/ ({client.flavor}) → {to_mount}/ here"
            with Progress(what, len(names)) as progress:
                return await migration.migrate_from(
                    client, keys, mount, names, dry_run, progress.step, kms.wrapping.private_key
                )

    reports = with_kms(database_url, data_dir, run)
    if print_yaml:
        present = [
            (r.name, r.key_type)
            for r in reports
            if r.outcome in (migration.MOVED, migration.UPDATED, migration.IDENTICAL)
            and to_mount.strip("/") == "transit"
        ]
        click.echo(migration.services_yaml(present))
    _report(reports, dry_run)


@click.command("migrate-to")
@source_options
@click.option("--from-mount", default="transit", show_default=True, help="This service's mount to move keys from.")
@database_options
def migrate_to(
    addr: str,
    token: str,
    mount: str,
    key_names: tuple[str, ...],
    dry_run: bool,
    from_mount: str,
    database_url: str | None,
    data_dir: Path,
) -> None:
    """Push this service's keys into a running Vault or OpenBao: through restore (a backup in its format:
    every version number and HMAC key kept) for keys allowing plaintext backup, else import/import_version
    wrapped for its wrapping_key (numbered from 1 there, new HMAC keys: the report says so).

    Keys already there are compared, never overwritten. Exit status 2 when a key could not be moved."""
    from kms_service.service import migration  # with aiohttp: imported by these commands alone (start-up)

    mount = mount.strip("/")
    _check_source(addr, token, mount)

    async def run(kms: KMS) -> list[Any]:
        keys = kms.mounts.key_service(await kms.mounts.read(from_mount))
        async with migration.VaultClient(addr, token) as client:
            await client.check(mount)
            names = list(key_names) or await keys.names()
            what = f"{len(names)} key(s) in {from_mount}/ here → {client.shown}/v1/{mount}/ ({client.flavor})"
            with Progress(what, len(names)) as progress:
                return await migration.migrate_to(client, keys, mount, names, dry_run, progress.step)

    _report(with_kms(database_url, data_dir, run), dry_run)
