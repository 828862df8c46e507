"""``serve`` (its options are the settings table's, settings.py; the serving itself is serving.py),
``relationships`` (an app's PLATFORM_RELATIONSHIPS) and ``config check`` (what serve would change)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from kms_service.cli_common import (
    checked,
    checked_database_url,
    database_options,
    load_config,
    log_options,
    logging_options,
    run,
    setting_options,
    with_kms,
)
from kms_service.errors import ConfigError
from kms_service.settings import SETTING_BY_NAME, SETTINGS, Settings

if TYPE_CHECKING:
    from kms_service.config import ServiceConfig
    from kms_service.service import KMS, provisioning


@click.command()
@setting_options(*SETTINGS)
@logging_options(level="info")
@click.pass_context
def serve(ctx: click.Context, **options: Any) -> None:
    """Apply migrations, provision the services YAML, and serve the transit API.

    \b
    Also read from the environment:
      KMS_MASTER_KEY  the master key, base64 of 32 random bytes (instead of <data-dir>/master.key,
                      which the first start creates: back it up; in a container, set this instead)
    """
    from kms_service import serving

    settings = Settings(**options)
    if (settings.tls_cert is None) != (settings.tls_key is None):
        raise click.UsageError("--tls-cert and --tls-key go together")
    tls = checked(lambda: serving.tls_context(settings))
    audit_file = settings.audit_file
    settings = replace(
        settings,
        database_url=checked_database_url(settings.database_url, settings.data_dir),
        service=load_config(settings.config_path),
        audit_file=audit_file.absolute() if audit_file is not None else None,
    )
    checked(lambda: serving.serve(settings, tls, log_options(ctx)))


@click.command()
@click.option(
    "--config",
    "config_path",
    envvar="KMS_CONFIG",
    show_envvar=True,
    required=True,
    type=click.Path(path_type=Path),
    help="The services YAML that serve runs with.",
)
@click.option(
    "--app",
    "app_path",
    envvar="KMS_APP",
    show_envvar=True,
    required=True,
    type=click.Path(path_type=Path),
    help="The app's YAML with its 'relationships'.",
)
@click.option(
    "--host",
    envvar="KMS_HOST",
    show_envvar=True,
    default=SETTING_BY_NAME["host"].default,
    show_default=True,
    help="The server's address, as the app reaches it (goes into the relationship).",
)
@click.option(
    "--port",
    envvar="KMS_PORT",
    show_envvar=True,
    default=SETTING_BY_NAME["port"].default,
    show_default=True,
    type=click.IntRange(1, 65535),
    help="The server's port (goes into the relationship).",
)
@click.option(
    "--tls-cert",
    envvar="KMS_TLS_CERT",
    show_envvar=True,
    help="Set when serve serves HTTPS (the same variable): the relationships' scheme is then https.",
)
@database_options
def relationships(
    config_path: Path,
    app_path: Path,
    host: str,
    port: int,
    tls_cert: str | None,
    database_url: str | None,
    data_dir: Path,
) -> None:
    """Print the app's PLATFORM_RELATIONSHIPS value (base64 JSON, one line)."""
    import base64
    import json

    from kms_service.config import load_relationships

    config = load_config(config_path)
    try:
        wanted = load_relationships(app_path)
    except ConfigError as exc:
        raise click.ClickException(exc.message) from None
    for rel in wanted:
        if rel.service != config.name:
            raise click.ClickException(
                f"{app_path}: relationships.{rel.name} names service '{rel.service}', "
                f"but {config_path} defines '{config.name}'"
            )
        if rel.endpoint not in config.endpoints:
            raise click.ClickException(
                f"{app_path}: relationships.{rel.name} names endpoint '{rel.endpoint}', which {config_path} "
                f"does not define (it has: {', '.join(config.endpoints)})"
            )

    async def build(kms: KMS) -> dict[str, list[dict[str, Any]]]:
        # The endpoints are the database's: only serve changes them (tokens are issued here).
        result = {}
        for rel in wanted:
            token, _expires = await kms.tokens.endpoint_token(rel.endpoint)
            result[rel.name] = [relationship_entry(config, rel.endpoint, token, host, port, tls=bool(tls_cert))]
        return result

    document = with_kms(database_url, data_dir, build)
    click.echo(base64.b64encode(json.dumps(document).encode()).decode("ascii"))


def sqlite_path(url: str) -> Path | None:
    """The file of a SQLite URL (None for another database, or one in memory)."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database)


def relationship_entry(
    config: ServiceConfig, endpoint: str, token: str, host: str, port: int, tls: bool = False
) -> dict[str, Any]:
    """One entry in the platform's shape (as its PLATFORM_RELATIONSHIPS carry it)."""
    ip = _ip_of(host)
    return {
        "username": "",
        "scheme": "https" if tls else "http",
        "service": config.name,
        "fragment": "",
        "ip": ip,
        "instance_ips": [ip],
        "hostname": host,
        "port": port,
        "cluster": f"kms-service-{config.name}",
        "host": host,
        "rel": endpoint,
        "path": "/",
        "query": {"is_master": True},
        "password": token,
        "type": config.type,
        "public": False,
        "host_mapped": False,
    }


def _ip_of(host: str) -> str:
    import ipaddress
    import socket

    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        pass
    try:
        return socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)[0][4][0]
    except OSError:
        return host


@click.group("config")
def config_group() -> None:
    """The services YAML: check what serve would change."""


@config_group.command("check")
@click.argument("config_path", metavar="FILE", type=click.Path(path_type=Path))
@database_options
def config_check(config_path: Path, database_url: str | None, data_dir: Path) -> None:
    """Print what 'serve --config FILE' would create and remove in the database; change nothing.

    Exits 1 when serve would refuse the file (a key's type changes, or endpoints would be removed, which
    needs --prune)."""
    from kms_service import serving
    from kms_service.service import provisioning
    from kms_service.storage import migrate as migrations
    from kms_service.storage.database import Database, create_engine

    config = load_config(config_path)
    url = checked_database_url(database_url, data_dir)

    async def read() -> tuple[provisioning.Plan, bool]:
        engine = create_engine(url, create=False)
        try:
            if await migrations.current_revision(engine) is None:
                return provisioning.plan_for_empty_database(config), False
            if not await migrations.is_current(engine):
                raise ConfigError("the database schema is older than this release: 'serve' migrates it first")
            async with Database(engine).reading() as session:
                return await provisioning.plan(session, config), True
        finally:
            await engine.dispose()

    if sqlite_path(url) is not None and not sqlite_path(url).exists():
        plan, exists = provisioning.plan_for_empty_database(config), False
    else:
        plan, exists = run(read())
    click.echo(f"{config_path}: {config.type} service '{config.name}', database {serving.safe_url(url)}")
    if not exists:
        click.echo("  the database is new: serve would create it, then:")
    for line in plan.lines() or ["nothing to change"]:
        click.echo(f"  {line}")
    if plan.type_conflicts:
        raise click.ClickException("serve would refuse this file: a key's type would change")
    if plan.endpoints_to_remove:
        raise click.ClickException(plan.removal_refusal(str(config_path)))
