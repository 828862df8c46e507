"""The ``kms-service`` command: serve, relationships, token create/revoke/list, policy, migrate,
migrate-from/-to, audit hash/verify; from ``cli_inspect.py`` keys list/show, endpoints list, token lookup,
inspect (read-only); from ``cli_keys.py`` keys rotate/config and rewrap (writes through the service); from
``cli_master_key.py`` master-key rotate/status.

Every flag also reads a ``KMS_*`` environment variable (``migrate-from``/``migrate-to``: ``--addr`` and ``--token``
read Vault's and OpenBao's own variables). Commands talk to the database directly (never through HTTP), so
they work while a server runs or before the first one starts; ``migrate-from``/``-to`` also talk HTTP to the
Vault or OpenBao server they move keys from or to.
"""

from __future__ import annotations

import asyncio
import base64
import gc
import ipaddress
import json
import logging
import os
import shutil
import signal
import socket
import ssl
import sys
import tempfile
from collections.abc import Awaitable, Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import click
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from kms_service import __version__, logs
from kms_service import audit_records as audit_rules
from kms_service.config import (
    ServiceConfig,
    load_relationships,
    load_service_config,
    parse_duration,
)
from kms_service.errors import ConfigError, KMSError
from kms_service.service import KMS, Invalidator, PolicyService, list_tokens, open_database, provisioning
from kms_service.settings import Settings
from kms_service.storage import migrate as migrations
from kms_service.storage import repository as repo
from kms_service.storage.database import (
    Database,
    create_engine,
    default_database_url,
    normalize_database_url,
    unavailable_reason,
)

try:
    import uvloop
except ImportError:  # pragma: no cover - optional speed-up (not on every platform)
    uvloop = None

log = logging.getLogger("kms_service")

# Connections the kernel may hold for accept() (it caps this at net.core.somaxconn, as Go's servers ask
# for). aiohttp's 128 made a burst of new connections past it wait for a SYN retry, a second or more.
LISTEN_BACKLOG = 4096
T = TypeVar("T")


def _run(coro: Awaitable[T]) -> T:
    """Run ``coro``; a failure the user can cause or fix (configuration, master key, the database or the
    disk) ends the command with one line on stderr, never a traceback."""
    try:
        # uvloop's event loop served ~15% more requests per core than asyncio's in bench/ here.
        return uvloop.run(coro) if uvloop else asyncio.run(coro)
    except KMSError as exc:
        raise click.ClickException(exc.message) from None
    except (DBAPIError, OSError, TimeoutError) as exc:
        raise click.ClickException(describe_fault(exc)) from None


def describe_fault(exc: BaseException) -> str:
    """One line for a database or operating-system failure (no SQL, no parameters, no traceback)."""
    reason = unavailable_reason(exc)
    if reason is not None:
        return f"database unavailable: {reason}"
    if isinstance(exc, OSError):
        where = f"{exc.filename}: " if exc.filename else ""
        return f"{where}{exc.strerror or exc}"
    return f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"


def _database_url(database_url: str | None, data_dir: Path) -> str:
    """The database URL, checked: a malformed one is one line, before anything is opened."""
    url = database_url or default_database_url(data_dir)
    try:
        normalize_database_url(url)
        make_url(url).port  # noqa: B018 - a port that is not a number raises here, not at connect
    except ConfigError as exc:
        raise click.BadParameter(exc.message, param_hint="--database-url") from None
    except ValueError:
        raise click.BadParameter(
            "invalid database URL (its port is not a number)", param_hint="--database-url"
        ) from None
    return url


def _with_kms(database_url: str | None, data_dir: Path, action: Callable[[KMS], Awaitable[T]]) -> T:
    """Open the service (migrating the database, checking the master key), run ``action``, close. The
    database must exist: only serve and migrate create one."""
    url = _database_url(database_url, data_dir)

    async def run() -> T:
        async with KMS.session(Settings(data_dir=data_dir, database_url=url), create=False) as kms:
            return await action(kms)

    return _run(run())


def _reading(database_url: str | None, data_dir: Path, action: Callable[[Any], Awaitable[T]]) -> T:
    """For commands that only read: the database as it is (never created or migrated; no master key)."""

    url = _database_url(database_url, data_dir)

    async def run() -> T:
        db = await open_database(Settings(data_dir=data_dir, database_url=url))
        try:
            return await action(db)
        finally:
            await db.engine.dispose()

    return _run(run())


def _sqlite_path(url: str) -> Path | None:
    """The file of a SQLite URL (None for another database, or one in memory)."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database)


def _safe_url(url: str) -> str:
    return make_url(url).render_as_string(hide_password=True)


def _set_logging(ctx: click.Context, param: click.Parameter, value: str) -> str:
    ctx.meta[f"kms_{param.name}"] = value
    logs.setup(ctx.meta.get("kms_log_format", "text"), ctx.meta.get("kms_log_level", "info"))
    return value


def logging_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """--log-format and --log-level, on every command (logging is set up before the command runs)."""
    func = click.option(
        "--log-level",
        envvar="KMS_LOG_LEVEL",
        show_envvar=True,
        type=click.Choice(logs.LEVELS),
        default="info",
        show_default=True,
        expose_value=False,
        is_eager=True,
        callback=_set_logging,
        help="debug also shows the libraries' lines (Alembic's migrations).",
    )(func)
    return click.option(
        "--log-format",
        envvar="KMS_LOG_FORMAT",
        show_envvar=True,
        type=click.Choice(logs.FORMATS),
        default="text",
        show_default=True,
        expose_value=False,
        is_eager=True,
        callback=_set_logging,
        help="json: one JSON object per line on standard error.",
    )(func)


def database_options(func: Callable[..., Any]) -> Callable[..., Any]:
    func = logging_options(func)
    func = click.option(
        "--data-dir",
        envvar="KMS_DATA_DIR",
        show_envvar=True,
        type=click.Path(path_type=Path, file_okay=False),
        default=Path("data"),
        show_default=True,
        help="Holds the SQLite database and master.key.",
    )(func)
    return click.option(
        "--database-url",
        envvar="KMS_DATABASE_URL",
        show_envvar=True,
        help="sqlite:///path or postgresql://user@host/db (default: SQLite under --data-dir).",
    )(func)


class _Group(click.Group):
    """Usage errors (a bad flag, a missing argument) are one line on stderr and exit 2, as every other
    error is one line and exit 1."""

    def main(self, *args: Any, **kwargs: Any) -> Any:
        kwargs["standalone_mode"] = False
        try:
            result = super().main(*args, **kwargs)
        except click.UsageError as exc:
            command = exc.ctx.command_path if exc.ctx is not None else "kms-service"
            click.echo(f"Error: {exc.format_message()} (see '{command} --help')", err=True)
            sys.exit(exc.exit_code)
        except click.ClickException as exc:
            click.echo(f"Error: {exc.format_message()}", err=True)
            sys.exit(exc.exit_code)
        except click.Abort:
            click.echo("Aborted!", err=True)
            sys.exit(1)
        sys.exit(result if isinstance(result, int) else 0)


def _duration_option(value: Any) -> int:
    if isinstance(value, int):
        return value
    try:
        return parse_duration(str(value))
    except ConfigError as exc:
        raise click.BadParameter(exc.message) from None


def max_token_ttl_option(func: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--max-token-ttl",
        envvar="KMS_MAX_TOKEN_TTL",
        show_envvar=True,
        default="8760h",
        show_default=True,
        callback=lambda _ctx, _param, value: _duration_option(value),
        help="The longest life a token may get (token create --ttl; auth/token/create caps to it).",
    )(func)


@click.group(cls=_Group, context_settings={"max_content_width": 120})
@click.version_option(__version__, prog_name="kms-service")
def main() -> None:
    """Self-hosted key management: Vault's transit API backed by SQLite or PostgreSQL."""
    logs.setup()  # each command's --log-format and --log-level set it up again


def _load_config(path: Path) -> ServiceConfig:
    try:
        return load_service_config(path)
    except ConfigError as exc:
        raise click.ClickException(exc.message) from None


@main.command()
@click.option(
    "--config",
    "config_path",
    envvar="KMS_CONFIG",
    show_envvar=True,
    required=True,
    type=click.Path(path_type=Path),
    help="The services YAML (the platform's .platform/services.yaml) to provision and serve.",
)
@click.option(
    "--host", envvar="KMS_HOST", show_envvar=True, default="127.0.0.1", show_default=True, help="Address to listen on."
)
@click.option(
    "--port",
    envvar="KMS_PORT",
    show_envvar=True,
    default=8200,
    show_default=True,
    type=click.IntRange(0, 65535),
    help="Port to listen on (0: a free one, shown in the banner).",
)
@click.option(
    "--reap-interval",
    envvar="KMS_REAP_INTERVAL",
    show_envvar=True,
    default=60.0,
    show_default=True,
    type=click.FloatRange(min=0.1),
    help="Seconds between sweeps that delete expired tokens.",
)
@click.option(
    "--rotate-check-interval",
    envvar="KMS_ROTATE_CHECK_INTERVAL",
    show_envvar=True,
    default=3600.0,
    show_default=True,
    type=click.FloatRange(min=0.1),
    help="Seconds between checks for keys whose auto_rotate_period has passed.",
)
@click.option(
    "--max-batch-items",
    envvar="KMS_MAX_BATCH_ITEMS",
    show_envvar=True,
    default=10_000,
    show_default=True,
    type=click.IntRange(1, 1_000_000),
    help="The most items one batch_input may carry; more is a 400.",
)
@click.option(
    "--cache-ttl",
    envvar="KMS_CACHE_TTL",
    show_envvar=True,
    default=5.0,
    show_default=True,
    type=click.FloatRange(min=0),
    help="Seconds a cached key or token is trusted before the database is asked again.",
)
@click.option(
    "--stale-while-down",
    envvar="KMS_STALE_WHILE_DOWN",
    show_envvar=True,
    default=300.0,
    show_default=True,
    type=click.FloatRange(min=0),
    help="Seconds a node keeps serving encrypt/decrypt/sign/verify/hmac from memory (keys and tokens it already "
    "holds) once the database is unreachable; then everything is a 503 until it is back. 0: at once.",
)
@click.option(
    "--header-read-timeout",
    envvar="KMS_HEADER_READ_TIMEOUT",
    show_envvar=True,
    default=10.0,
    show_default=True,
    type=click.FloatRange(min=0.1),
    help="Seconds a request's headers may take to arrive (from its first byte); then the connection is closed.",
)
@click.option(
    "--request-read-timeout",
    envvar="KMS_REQUEST_READ_TIMEOUT",
    show_envvar=True,
    default=30.0,
    show_default=True,
    type=click.FloatRange(min=0.1),
    help="Seconds a whole request, body included, may take to arrive.",
)
@click.option(
    "--idle-timeout",
    envvar="KMS_IDLE_TIMEOUT",
    show_envvar=True,
    default=300.0,
    show_default=True,
    type=click.FloatRange(min=0.1),
    help="Seconds a kept-alive connection may sit idle between requests.",
)
@click.option(
    "--max-connections",
    envvar="KMS_MAX_CONNECTIONS",
    show_envvar=True,
    default=512,
    show_default=True,
    type=click.IntRange(0, 1_000_000),
    help="Open connections at most; one more is answered 503 and closed (0: no limit).",
)
@click.option(
    "--max-request-size",
    "max_request_bytes",
    envvar="KMS_MAX_REQUEST_SIZE",
    show_envvar=True,
    default=2 * 1024 * 1024,
    show_default=True,
    type=click.IntRange(1024, 1 << 30),
    help="Bytes a request body may have on single-item paths; more is a 413.",
)
@click.option(
    "--max-batch-request-size",
    "max_batch_request_bytes",
    envvar="KMS_MAX_BATCH_REQUEST_SIZE",
    show_envvar=True,
    default=32 * 1024 * 1024,
    show_default=True,
    type=click.IntRange(1024, 1 << 30),
    help="Bytes a request body may have on paths taking batch_input, and restore.",
)
@click.option(
    "--max-json-depth",
    envvar="KMS_MAX_JSON_DEPTH",
    show_envvar=True,
    default=32,
    show_default=True,
    type=click.IntRange(2, 500),
    help="Nesting depth of a JSON body at most.",
)
@click.option(
    "--max-json-string-length",
    envvar="KMS_MAX_JSON_STRING_LENGTH",
    show_envvar=True,
    default=1024 * 1024,
    show_default=True,
    type=click.IntRange(64, 1 << 30),
    help="Characters in one JSON string at most.",
)
@click.option(
    "--max-json-entries",
    envvar="KMS_MAX_JSON_ENTRIES",
    show_envvar=True,
    default=10_000,
    show_default=True,
    type=click.IntRange(1, 10_000_000),
    help="Entries in one JSON object or array at most (batch_input: --max-batch-items).",
)
@click.option(
    "--max-json-tokens",
    envvar="KMS_MAX_JSON_TOKENS",
    show_envvar=True,
    default=200_000,
    show_default=True,
    type=click.IntRange(100, 100_000_000),
    help="Values (and keys) in one JSON body at most.",
)
@click.option(
    "--prune",
    envvar="KMS_PRUNE",
    show_envvar=True,
    is_flag=True,
    default=False,
    help="Remove endpoints (and their tokens) the database holds and --config no longer names; "
    "without it, serve refuses to start when the file drops one.",
)
@click.option(
    "--strict-permissions",
    envvar="KMS_STRICT_PERMISSIONS",
    show_envvar=True,
    is_flag=True,
    default=False,
    help="Refuse to start when master.key or the SQLite files are readable by group or others (default: a warning).",
)
@max_token_ttl_option
@click.option(
    "--tls-cert",
    envvar="KMS_TLS_CERT",
    show_envvar=True,
    type=click.Path(path_type=Path, dir_okay=False),
    help="PEM certificate (chain) to serve HTTPS with; needs --tls-key. TLS 1.2 or newer only.",
)
@click.option(
    "--tls-key",
    envvar="KMS_TLS_KEY",
    show_envvar=True,
    type=click.Path(path_type=Path, dir_okay=False),
    help="Its PEM key.",
)
@click.option(
    "--access-log/--no-access-log",
    envvar="KMS_ACCESS_LOG",
    show_envvar=True,
    default=False,
    show_default=True,
    help="One log line per request: request id, method, route template, status, latency, token accessor "
    "(never a token, a body or a key name).",
)
@click.option(
    "--workers",
    envvar="KMS_WORKERS",
    show_envvar=True,
    type=click.IntRange(min=1),
    help="Processes serving the port (SO_REUSEPORT), one database and master key.  [default: one per core]",
)
@click.option(
    "--audit-file",
    envvar="KMS_AUDIT_FILE",
    show_envvar=True,
    type=click.Path(path_type=Path, dir_okay=False),
    help="Audit log: one JSON line per request and response, secrets hashed (reopened on SIGHUP; the workers "
    "of --workers share it).",
)
@click.option(
    "--audit-db/--no-audit-db",
    envvar="KMS_AUDIT_DB",
    show_envvar=True,
    default=False,
    show_default=True,
    help="Audit log in the database's audit_records table (written in batches).",
)
@click.option(
    "--audit-flush-interval",
    envvar="KMS_AUDIT_FLUSH_INTERVAL",
    show_envvar=True,
    default=1.0,
    show_default=True,
    type=click.FloatRange(0.05, 60),
    help="Seconds between fsyncs of the audit file, writes of the audit table and anchors of the chains.",
)
@click.option(
    "--audit-db-queue",
    envvar="KMS_AUDIT_DB_QUEUE",
    show_envvar=True,
    default=20_000,
    show_default=True,
    type=click.IntRange(1, 10_000_000),
    help="Audit records that may wait for the database (--audit-db); past it the table refuses them.",
)
@database_options
@click.pass_context
def serve(
    ctx: click.Context,
    config_path: Path,
    host: str,
    port: int,
    audit_file: Path | None,
    audit_db: bool,
    audit_flush_interval: float,
    audit_db_queue: int,
    reap_interval: float,
    rotate_check_interval: float,
    max_batch_items: int,
    cache_ttl: float,
    access_log: bool,
    workers: int | None,
    database_url: str | None,
    data_dir: Path,
    prune: bool,
    strict_permissions: bool,
    max_token_ttl: int,
    tls_cert: Path | None,
    tls_key: Path | None,
    **limits: Any,
) -> None:
    """Apply migrations, provision the services YAML, and serve the transit API.

    \b
    Also read from the environment:
      KMS_MASTER_KEY  the master key, base64 of 32 random bytes (instead of <data-dir>/master.key,
                      which the first start creates: back it up; in a container, set this instead)
    """
    tls = tls_context(tls_cert, tls_key)
    settings = Settings(
        strict_permissions=strict_permissions,
        max_token_ttl=max_token_ttl,
        data_dir=data_dir,
        database_url=_database_url(database_url, data_dir),
        service=_load_config(config_path),
        prune=prune,
        cache_ttl=cache_ttl,
        reap_interval=reap_interval,
        rotate_check_interval=rotate_check_interval,
        max_batch_items=max_batch_items,
        access_log=access_log,
        audit_file=audit_file.absolute() if audit_file is not None else None,
        audit_db=audit_db,
        audit_flush_interval=audit_flush_interval,
        audit_db_queue=audit_db_queue,
        **limits,
    )
    json_logs = ctx.meta.get("kms_log_format") == "json"
    count = workers if workers is not None else os.cpu_count() or 1
    if count == 1:
        _run(_serve(settings, config_path, host, port, json_logs, tls=tls))
    else:
        log_options = (ctx.meta.get("kms_log_format", "text"), ctx.meta.get("kms_log_level", "info"))
        tls_files = (tls_cert, tls_key) if tls is not None else None
        _serve_workers(settings, config_path, host, port, json_logs, count, log_options, tls_files)


def tls_context(cert: Path | None, key: Path | None) -> ssl.SSLContext | None:
    """A server context for TLS 1.2 and newer (None without --tls-cert and --tls-key)."""
    if cert is None and key is None:
        return None
    if cert is None or key is None:
        raise click.UsageError("--tls-cert and --tls-key go together")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(cert, key)
    except (ssl.SSLError, OSError) as exc:
        reason = getattr(exc, "strerror", None) or getattr(exc, "reason", None) or type(exc).__name__
        raise click.ClickException(f"cannot load the TLS certificate {cert} and key {key}: {reason}") from None
    return context


def _banner(
    settings: Settings,
    config_path: Path,
    host: str,
    bound: int,
    origin: str,
    workers: str = "",
    scheme: str = "http",
) -> str:
    config, url, data_dir = settings.service, settings.url, settings.data_dir
    assert config is not None
    prog = sys.argv[0] if sys.argv[0].endswith("kms-service") else "kms-service"
    same_db = f" --data-dir {data_dir}" if url == default_database_url(data_dir) else " --database-url URL"
    return (
        f"kms-service {__version__}: serving {config.type} service '{config.name}' on {scheme}://{host}:{bound}\n"
        + (f"  workers: {workers}\n" if workers else "")
        + f"  database: {_safe_url(url)}\n"
        f"  master key: {origin}\n"
        f"  endpoints: {', '.join(config.endpoints)}\n"
        "  an app's PLATFORM_RELATIONSHIPS (its token is .<relationship>[0].password):\n"
        f"    {prog} relationships --config {config_path} --app APP.yaml --port {bound}{same_db}\n"
        "    (deploy/app.example.yaml is an app YAML for the example config)\n"
        f"  an operator token: {prog} token create --policy root --ttl 1h{same_db}"
    )


def _announce(banner: str, json_logs: bool) -> None:
    if json_logs:  # every line of standard error is JSON then
        log.info(banner)
    else:
        click.echo(banner, err=True)


async def _serve(
    settings: Settings,
    config_path: Path,
    host: str,
    port: int,
    json_logs: bool,
    ready: Callable[[], None] | None = None,
    tls: ssl.SSLContext | None = None,
) -> None:
    """One serving process; ``ready`` (a worker of ``--workers``): share the port, print nothing, call it
    once listening. ``tls``: serve HTTPS."""
    # SIGHUP reopens the audit file once serving; until then it must not end the process (its default).
    signal.signal(signal.SIGHUP, signal.SIG_IGN)

    # The HTTP side is imported here, by serve alone: the other commands start faster without it.
    from aiohttp import web

    from kms_service.web.app import create_app
    from kms_service.web.request_audit import AUDIT_KEY
    from kms_service.web.routing import KMS_KEY
    from kms_service.web.server import AppRunner

    # The access log is the application's own line (web/app.py), not aiohttp's (which shows query strings).
    runner = AppRunner(create_app(settings, announce=ready is None), access_log=None)
    await runner.setup()  # opens the service: migrate, unlock, provision (errors end here, before listening)
    try:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        audit = runner.app.get(AUDIT_KEY)
        # logrotate's signal: reopen the audit file (without an audit file, SIGHUP does nothing).
        loop.add_signal_handler(signal.SIGHUP, audit.reopen if audit is not None else lambda: None)
        site = web.TCPSite(
            runner,
            host,
            port,
            ssl_context=tls,
            reuse_port=True if ready is not None else None,
            backlog=LISTEN_BACKLOG,
        )
        await site.start()
        # What start-up made (modules, the app, its route table: ~150 k objects) lives as long as the process;
        # out of the collector's sight, a full collection no longer walks it all (that cost a batch-1000
        # request about a fifth of its time, and every request some).
        gc.collect()  # what start-up left as garbage is freed, not frozen with the rest
        gc.freeze()
        if ready is not None:
            ready()
        else:
            bound = runner.addresses[0][1] if runner.addresses else port
            origin = runner.app[KMS_KEY].master_key.origin
            scheme = "https" if tls is not None else "http"
            _announce(_banner(settings, config_path, host, bound, origin, scheme=scheme), json_logs)
        await stop.wait()
    finally:
        await runner.cleanup()


def _serve_workers(
    settings: Settings,
    config_path: Path,
    host: str,
    port: int,
    json_logs: bool,
    count: int,
    log_options: tuple[str, str],
    tls_files: tuple[Path, Path] | None = None,
) -> None:
    """``serve --workers N`` (kms_service/workers.py): migrate and provision here, once; then N workers.
    ``tls_files``: the certificate and key, which each worker loads (an SSL context does not cross processes)."""
    from dataclasses import replace

    from kms_service import workers
    from kms_service.web.app import announce_keys
    from kms_service.web.sys_metrics import MULTIPROC_DIR_ENV

    if settings.url.startswith("sqlite") and make_url(settings.url).database in (None, "", ":memory:"):
        raise click.ClickException("an in-memory SQLite database lives in one process: use --workers 1")

    async def prepare() -> str:
        async with KMS.session(settings) as kms:  # migrate, master key, provision: once, before any worker
            await announce_keys(kms)
            return kms.master_key.origin

    try:
        bound = workers.check_port(host, port)
    except workers.WorkerFailed as exc:
        raise click.ClickException(str(exc)) from None
    origin = _run(prepare())
    signals = workers.Signals()
    # prometheus-client's multiprocess mode: each worker's metrics in files here, merged by every scrape. Set
    # before the workers start (they read it when they import prometheus_client); removed when serve ends.
    metrics_dir = tempfile.mkdtemp(prefix=f"kms-service-metrics-{os.getpid()}-")
    os.environ[MULTIPROC_DIR_ENV] = metrics_dir
    try:
        args = (replace(settings, prepared=True), config_path, host, bound, json_logs, log_options, tls_files)
        signals.workers = started = workers.start(count, _serve_worker, args)
        try:
            workers.wait_ready(started, lambda: signals.received)
            if not signals.received:
                pids = ", ".join(str(w.process.pid) for w in started)
                scheme = "https" if tls_files else "http"
                banner = _banner(settings, config_path, host, bound, origin, f"{count} (pids {pids})", scheme)
                _announce(banner, json_logs)
            workers.supervise(started, lambda: signals.received)
        except workers.WorkerFailed as exc:
            workers.stop(started)
            raise click.ClickException(f"{exc}; stopped the other workers") from None
    finally:
        signals.restore()
        shutil.rmtree(metrics_dir, ignore_errors=True)


def _serve_worker(
    settings: Settings,
    config_path: Path,
    host: str,
    port: int,
    json_logs: bool,
    log_options: tuple[str, str],
    tls_files: tuple[Path, Path] | None,
    index: int,
    writer: Any,
    parent: int,
) -> None:
    """A worker process of ``serve --workers`` (started by multiprocessing's spawn)."""
    from dataclasses import replace

    from kms_service import workers

    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # a SIGHUP passed on while starting must not end it
    workers.die_with_parent(parent)
    logs.setup(*log_options)
    try:
        tls = tls_context(*tls_files) if tls_files else None
        ready = lambda: workers.report_ready(writer)  # noqa: E731
        settings = replace(settings, worker=index)
        _run(_serve(settings, config_path, host, port, json_logs, ready=ready, tls=tls))
    except click.ClickException as exc:
        workers.report_error(writer, f"worker {index}: {exc.message}")
        raise SystemExit(1) from None
    except OSError as exc:  # e.g. the port, taken between the parent's check and this bind
        workers.report_error(writer, f"worker {index}: cannot listen on {host}:{port}: {exc.strerror or exc}")
        raise SystemExit(1) from None
    except KeyboardInterrupt:  # SIGINT from a terminal before the event loop took the signal over
        raise SystemExit(0) from None


@main.command()
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
    default="127.0.0.1",
    show_default=True,
    help="The server's address, as the app reaches it (goes into the relationship).",
)
@click.option(
    "--port",
    envvar="KMS_PORT",
    show_envvar=True,
    default=8200,
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
    config = _load_config(config_path)
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

    document = _with_kms(database_url, data_dir, build)
    click.echo(base64.b64encode(json.dumps(document).encode()).decode("ascii"))


def relationship_entry(
    config: ServiceConfig, endpoint: str, token: str, host: str, port: int, tls: bool = False
) -> dict[str, Any]:
    """One entry in the platform's shape (see the seed's relationship reference)."""
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
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        pass
    try:
        return socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)[0][4][0]
    except OSError:
        return host


@main.group("config")
def config_group() -> None:
    """The services YAML: check what serve would change."""


@config_group.command("check")
@click.argument("config_path", metavar="FILE", type=click.Path(path_type=Path))
@database_options
def config_check(config_path: Path, database_url: str | None, data_dir: Path) -> None:
    """Print what 'serve --config FILE' would create and remove in the database; change nothing.

    Exits 1 when serve would refuse the file (a key's type changes, or endpoints would be removed, which
    needs --prune)."""
    config = _load_config(config_path)
    url = _database_url(database_url, data_dir)

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

    if _sqlite_path(url) is not None and not _sqlite_path(url).exists():
        plan, exists = provisioning.plan_for_empty_database(config), False
    else:
        plan, exists = _run(read())
    click.echo(f"{config_path}: {config.type} service '{config.name}', database {_safe_url(url)}")
    if not exists:
        click.echo("  the database is new: serve would create it, then:")
    for line in plan.lines() or ["nothing to change"]:
        click.echo(f"  {line}")
    if plan.type_conflicts:
        raise click.ClickException("serve would refuse this file: a key's type would change")
    if plan.endpoints_to_remove:
        raise click.ClickException(plan.removal_refusal(str(config_path)))


@main.group()
def policy() -> None:
    """ACL policy documents (Vault's HCL or JSON): write, read, list, delete."""


def _policies(db: Any) -> PolicyService:
    return PolicyService(db, Invalidator())


@policy.command("write")
@click.argument("name")
@click.argument("document", type=click.File("r", encoding="utf-8"))
@database_options
def policy_write(name: str, document: Any, database_url: str | None, data_dir: Path) -> None:
    """Write policy NAME from DOCUMENT (a file, or - for standard input)."""
    text = document.read()
    _with_kms(database_url, data_dir, lambda kms: kms.policies.write(name, text))
    click.echo(f"Success! Uploaded policy: {name}")


@policy.command("read")
@click.argument("name")
@database_options
def policy_read(name: str, database_url: str | None, data_dir: Path) -> None:
    """Print policy NAME's document."""
    text = _reading(database_url, data_dir, lambda db: _policies(db).read(name))
    if text is None:
        raise click.ClickException(f"no policy named {name}")
    click.echo(text)


@policy.command("list")
@database_options
def policy_list(database_url: str | None, data_dir: Path) -> None:
    """Every policy's name."""
    for name in _reading(database_url, data_dir, lambda db: _policies(db).names()):
        click.echo(name)


@policy.command("delete")
@click.argument("name")
@database_options
def policy_delete(name: str, database_url: str | None, data_dir: Path) -> None:
    """Delete policy NAME (tokens that name it keep the name; it grants nothing until written again)."""
    _with_kms(database_url, data_dir, lambda kms: kms.policies.delete(name))
    click.echo(f"Success! Deleted policy: {name}")


@main.group()
def audit() -> None:
    """The audit log: hash a value to search for it, verify a log's chains."""


@audit.command("hash")
@click.argument("value")
@database_options
def audit_hash(value: str, database_url: str | None, data_dir: Path) -> None:
    """Print VALUE as the audit log shows it (hmac-sha256:...), to search the log for it. A plaintext or
    context is hashed as sent: its base64."""

    async def hashed(kms: KMS) -> str:
        return kms.audit_keys.hash(value)

    click.echo(_with_kms(database_url, data_dir, hashed))


@audit.command("verify")
@click.argument("files", nargs=-1, type=click.Path(path_type=Path, dir_okay=False, exists=True))
@click.option("--db", "from_db", is_flag=True, default=False, help="Verify the audit_records table instead.")
@database_options
def audit_verify(files: tuple[Path, ...], from_db: bool, database_url: str | None, data_dir: Path) -> None:
    """Check the chains of audit log FILES (a rotated log: every file, oldest first) against the anchors
    in the database: a record removed, moved or edited, and records cut off the end, are reported with the
    last record up to which the log is intact. Exit status 1 when anything is wrong."""
    if bool(files) == from_db:
        raise click.UsageError("give the audit log's FILES, or --db")

    async def check(kms: KMS) -> audit_rules.Verification:
        async with kms.db.reading() as session:
            anchors = {
                row.chain_id: audit_rules.Anchor(row.seq, row.hash, row.closed)
                for row in await repo.audit_anchors(session)
                if row.sink == ("db" if from_db else "file")
            }
            lines: list[bytes] = []
            if from_db:
                after = 0
                while page := await repo.audit_record_lines(session, after, 10_000):
                    lines.extend(line.encode() + b"\n" for _, line in page)
                    after = page[-1][0]
        result = audit_rules.verify(lines if from_db else _lines_of(files), kms.audit_keys.chain_key, anchors)
        result.absent = sorted(set(anchors) - set(result.chains))
        return result

    result = _with_kms(database_url, data_dir, check)
    for report in result.chains.values():
        span = f"seq {report.first_seq}..{report.verified_seq}" if report.verified_seq else "no record"
        if report.ok:
            click.echo(f"chain {report.id}: intact, {report.records} record(s), {span}; tail: {report.tail}")
        else:
            click.echo(
                f"chain {report.id}: BROKEN: {report.problem}; intact up to seq {report.verified_seq} "
                f"(line {report.verified_line})"
            )
    for number in result.unreadable:
        click.echo(f"line {number}: not an audit record (a torn write, or an edit)")
    if result.torn_end is not None:
        click.echo(f"line {result.torn_end}: the last record is incomplete (cut short by a crash)")
    for chain_id in result.absent:
        click.echo(f"chain {chain_id}: anchored in the database, no record here (in another file?)")
    if not result.chains and not result.absent:
        click.echo("no audit records")
    if not result.ok:
        raise SystemExit(1)


def _lines_of(files: tuple[Path, ...]) -> Iterator[bytes]:
    """The lines of ``files`` in order, read as they are checked (a log may be larger than memory)."""
    for path in files:
        with path.open("rb") as fh:
            yield from fh


@main.group()
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
    default="8760h",
    show_default=True,
    help="Lifetime, e.g. 2s, 1h, 8760h.",
)
@click.option(
    "--display-name",
    envvar="KMS_DISPLAY_NAME",
    show_envvar=True,
    default="token",
    show_default=True,
    help="A name for the token, shown by token list and lookup.",
)
@max_token_ttl_option
@database_options
def token_create(
    policies: tuple[str, ...],
    ttl: str,
    display_name: str,
    max_token_ttl: int,
    database_url: str | None,
    data_dir: Path,
) -> None:
    """Create a token; the token itself is printed on the last line, and shown only this once."""
    try:
        seconds = parse_duration(ttl)
    except ConfigError as exc:
        raise click.BadParameter(exc.message, param_hint="--ttl") from None
    if seconds > max_token_ttl:
        raise click.BadParameter(
            f"longer than the maximum token TTL ({max_token_ttl} s; --max-token-ttl)", param_hint="--ttl"
        )

    secret, info = _with_kms(
        database_url,
        data_dir,
        lambda kms: kms.tokens.create(list(policies), timedelta(seconds=seconds), display_name),
    )
    click.echo(f"accessor: {info.accessor}")
    click.echo(f"policies: {', '.join(info.policies)}")
    click.echo(f"expires:  {info.expires_at.isoformat() if info.expires_at else 'never'}")
    click.echo(secret)


@token.command("revoke")
@click.argument("accessor_or_token")
@database_options
def token_revoke(accessor_or_token: str, database_url: str | None, data_dir: Path) -> None:
    """Revoke a token by its accessor (see 'token list') or by the token itself."""

    if not _with_kms(database_url, data_dir, lambda kms: kms.tokens.revoke(accessor_or_token)):
        raise click.ClickException("no such token")
    click.echo("revoked")


@token.command("list")
@database_options
def token_list(database_url: str | None, data_dir: Path) -> None:
    """Accessors, policies and expiry of every token (never the tokens)."""

    records = _reading(database_url, data_dir, list_tokens)
    click.echo(f"{'accessor':<24}  {'expires':<25}  {'endpoint':<16}  policies")
    for record in records:
        expires = record.expires_at.isoformat(timespec="seconds") if record.expires_at else "never"
        click.echo(f"{record.accessor:<24}  {expires:<25}  {record.endpoint or '-':<16}  {', '.join(record.policies)}")


@main.command()
@database_options
def migrate(database_url: str | None, data_dir: Path) -> None:
    """Upgrade the database schema to the newest revision (Alembic 'upgrade head')."""
    url = _database_url(database_url, data_dir)

    async def upgrade() -> None:
        engine = create_engine(url)
        try:
            await migrations.upgrade(engine)
        finally:
            await engine.dispose()

    _run(upgrade())
    click.echo(f"database {_safe_url(url)} is at the newest schema revision")


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
    from kms_service.service import migration

    async def check() -> None:
        async with migration.VaultClient(addr, token) as client:
            await client.check(mount)

    _run(check())


class Progress:
    """Progress of a long command on standard error: a bar (rich.progress) when stderr is a terminal, else
    plain lines a log keeps (``[3/10] name: ...``), or none (``lines=False``). Use as a context manager."""

    def __init__(self, description: str, total: int, lines: bool = True) -> None:
        self._bar: Any = None
        if sys.stderr.isatty():
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn
            from rich.progress import Progress as Bar

            columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
            self._bar = Bar(*columns, console=Console(stderr=True), transient=False)
            self._task = self._bar.add_task(description, total=total)
        elif lines:
            click.echo(description, err=True)

    def __enter__(self) -> Progress:
        if self._bar is not None:
            self._bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()

    def step(self, index: int, total: int, text: str, finished: bool) -> None:
        """One key of migrate-from/-to (``migration.Progress``): finished ones print their line above the bar."""
        if self._bar is None:
            click.echo(f"[{index}/{total}] {text}", err=True)
        elif finished:
            self._bar.console.print(f"[{index}/{total}] {text}", markup=False, highlight=False)
            self._bar.advance(self._task)
        else:
            self._bar.update(self._task, description=text)

    def advance(self, count: int) -> None:
        if self._bar is not None:
            self._bar.advance(self._task, count)


def _report(reports: list[Any], dry_run: bool) -> None:
    from kms_service.service import migration

    for report in reports:
        click.echo(report.line(dry_run))
    click.echo(migration.summary(reports, dry_run))
    problems = [r for r in reports if r.outcome in migration.PROBLEMS]
    if problems:
        raise click.exceptions.Exit(2)


@main.command("migrate-from")
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
    from kms_service.service import migration

    mount = mount.strip("/")
    _check_source(addr, token, mount)

    async def run(kms: KMS) -> list[Any]:
        engine = kms.mounts.engine(await kms.mounts.read(to_mount))
        async with migration.VaultClient(addr, token) as client:
            listed = await client.check(mount)
            names = list(key_names) or listed
            what = f"{len(names)} key(s) in {client.shown}/v1/{mount}/ ({client.flavor}) → {to_mount}/ here"
            with Progress(what, len(names)) as progress:
                return await migration.migrate_from(
                    client, engine, mount, names, dry_run, progress.step, kms.wrapping.private_key
                )

    reports = _with_kms(database_url, data_dir, run)
    if print_yaml:
        present = [
            (r.name, r.key_type)
            for r in reports
            if r.outcome in (migration.MOVED, migration.UPDATED, migration.IDENTICAL)
            and to_mount.strip("/") == "transit"
        ]
        click.echo(migration.services_yaml(present))
    _report(reports, dry_run)


@main.command("migrate-to")
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
    from kms_service.service import migration

    mount = mount.strip("/")
    _check_source(addr, token, mount)

    async def run(kms: KMS) -> list[Any]:
        engine = kms.mounts.engine(await kms.mounts.read(from_mount))
        async with migration.VaultClient(addr, token) as client:
            await client.check(mount)
            names = list(key_names) or await engine.names()
            what = f"{len(names)} key(s) in {from_mount}/ here → {client.shown}/v1/{mount}/ ({client.flavor})"
            with Progress(what, len(names)) as progress:
                return await migration.migrate_to(client, engine, mount, names, dry_run, progress.step)

    _report(_with_kms(database_url, data_dir, run), dry_run)


# The read-only operator commands (keys, endpoints, inspect) live in cli_inspect.py, which uses the helpers above.
from kms_service.cli_inspect import endpoints, inspect, keys, token_lookup  # noqa: E402

# And the writing ones (keys rotate, keys config, rewrap), through the service, in cli_keys.py.
from kms_service.cli_keys import rewrap  # noqa: E402
from kms_service.cli_master_key import master_key  # noqa: E402

main.add_command(keys)
main.add_command(endpoints)
main.add_command(inspect)
main.add_command(master_key)
main.add_command(rewrap)
token.add_command(token_lookup)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
