"""Serving processes: the app on its port (HTTP, or HTTPS), the start-up banner, the signals, and ``--workers
N`` (with workers.py: N processes sharing the port). ``serve`` (cli_serve.py) builds the ``Settings`` and
calls ``serve`` here; nothing here knows the command line, so errors are ``KMSError``s with one line each."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import shlex
import shutil
import signal
import ssl
import sys
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from kms_service import __version__, logs, workers
from kms_service.errors import KMSError
from kms_service.service import KMS
from kms_service.settings import Settings
from kms_service.storage.database import default_database_url, describe_fault

try:
    import uvloop
except ImportError:  # pragma: no cover - optional speed-up (not on every platform)
    uvloop = None

log = logging.getLogger("kms_service")

# Connections the kernel may hold for accept() (it caps this at net.core.somaxconn, as Go's servers ask
# for). aiohttp's 128 made a burst of new connections past it wait for a SYN retry, a second or more.
LISTEN_BACKLOG = 4096
T = TypeVar("T")


class ServingFailed(KMSError):
    """Serving could not start, or a worker died: the message is one line for the operator."""


def run_loop(coro: Awaitable[T]) -> T:
    # uvloop's event loop served ~15% more requests per core than asyncio's in bench/ here.
    return uvloop.run(coro) if uvloop else asyncio.run(coro)


def safe_url(url: str) -> str:
    return make_url(url).render_as_string(hide_password=True)


def tls_context(settings: Settings) -> ssl.SSLContext | None:
    """A server context for TLS 1.2 and newer (None without --tls-cert and --tls-key; the command checks
    that both or neither are given)."""
    cert, key = settings.tls_cert, settings.tls_key
    if cert is None or key is None:
        return None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(cert, key)
    except (ssl.SSLError, OSError) as exc:
        reason = getattr(exc, "strerror", None) or getattr(exc, "reason", None) or type(exc).__name__
        raise ServingFailed(f"cannot load the TLS certificate {cert} and key {key}: {reason}") from None
    return context


def serve(settings: Settings, tls: ssl.SSLContext | None, log_options: tuple[str, str]) -> None:
    """Serve until SIGTERM or SIGINT: one process, or ``settings.workers`` of them (one per core without it).
    ``tls``: serve HTTPS (workers load their own from the settings' files). ``log_options``: the format and
    level, which workers set up again."""
    json_logs = log_options[0] == "json"
    count = settings.workers if settings.workers is not None else os.cpu_count() or 1
    if count == 1:
        run_loop(_serve(settings, json_logs, tls=tls))
    else:
        _serve_workers(settings, json_logs, count, log_options)


def _banner(settings: Settings, bound: int, origin: str, workers: str = "", scheme: str = "http") -> str:
    config, url, host = settings.service, settings.url, settings.host
    assert config is not None
    same, note = _same_service_options(settings, origin)
    config_path = shlex.quote(str(Path(settings.config_path or "").absolute()))
    prog = runnable_program()
    app, app_note = _app_yaml(settings, config)
    tls = f" --tls-cert {shlex.quote(str(Path(settings.tls_cert).absolute()))}" if settings.tls_cert else ""
    return (
        f"kms-service {__version__}: serving {config.type} service '{config.name}' on {scheme}://{host}:{bound}\n"
        + (f"  workers: {workers}\n" if workers else "")
        + f"  database: {safe_url(url)}\n"
        f"  master key: {origin}\n"
        f"  endpoints: {', '.join(config.endpoints)}\n"
        "  an app's PLATFORM_RELATIONSHIPS (its token is .<relationship>[0].password):\n"
        f"    {prog} relationships --config {config_path} --app {app} --port {bound}{tls}{same}\n"
        f"    ({app_note})\n"
        f"  an operator token: {prog} token create --policy root --ttl 1h{same}"
        + (f"\n{note.rstrip()}" if note else "")
    )


def runnable_program() -> str:
    """The command as the operator can run it again from any directory."""
    argv0 = sys.argv[0]
    if argv0.endswith("kms-service") and os.sep in argv0:
        return shlex.quote(str(Path(argv0).absolute()))
    if shutil.which("kms-service") is not None:
        return "kms-service"
    return f"{shlex.quote(sys.executable)} -m kms_service"


def _same_service_options(settings: Settings, origin: str) -> tuple[str, str]:
    """The options that make another command open this database with this master key, from any directory
    (absolute paths), and a note when the operator must supply something: a URL's password is never printed,
    the variable that holds it is."""
    data_dir = f" --data-dir {shlex.quote(str(Path(settings.data_dir).absolute()))}"
    url = settings.url
    if url == default_database_url(settings.data_dir):
        return data_dir, ""
    key_dir = "" if origin == "KMS_MASTER_KEY" else data_dir  # else the commands read the same variable
    if make_url(url).password is None:
        return f" --database-url {shlex.quote(url)}{key_dir}", ""
    note = "" if os.environ.get("KMS_DATABASE_URL") == url else "  (KMS_DATABASE_URL: the URL with its password)\n"
    return f' --database-url "$KMS_DATABASE_URL"{key_dir}', note


def _app_yaml(settings: Settings, config: Any) -> tuple[str, str]:
    """An app YAML for the banner's relationships command: one beside the services YAML (as ``kms-service
    init`` writes them), else one given inline naming the first endpoint."""
    folder = Path(settings.config_path or "").absolute().parent
    for name in ("app.yaml", "app.example.yaml"):
        if (folder / name).is_file():
            return shlex.quote(str(folder / name)), f"{folder / name} names the app's relationships"
    endpoint = next(iter(config.endpoints))
    inline = f'relationships: {{app: "{config.name}:{endpoint}"}}'
    return (
        f"<(echo {shlex.quote(inline)})",
        "bash; an app YAML names its relationships: kms-service init DIR writes an example",
    )


def _announce(banner: str, json_logs: bool) -> None:
    if json_logs:  # every line of standard error is JSON then
        log.info(banner)
    else:
        print(banner, file=sys.stderr, flush=True)


async def _serve(
    settings: Settings,
    json_logs: bool,
    ready: Callable[[], None] | None = None,
    tls: ssl.SSLContext | None = None,
) -> None:
    """One serving process; ``ready`` (a worker of ``--workers``): share the port, print nothing, call it
    once listening. ``tls``: serve HTTPS."""
    # SIGHUP reopens the audit file once serving; until then it must not end the process (its default).
    signal.signal(signal.SIGHUP, signal.SIG_IGN)

    # The HTTP side is imported here, when serving starts: the other commands start faster without it.
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
            settings.host,
            settings.port,
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
            bound = runner.addresses[0][1] if runner.addresses else settings.port
            origin = runner.app[KMS_KEY].master_key.origin
            scheme = "https" if tls is not None else "http"
            _announce(_banner(settings, bound, origin, scheme=scheme), json_logs)
        await stop.wait()
    finally:
        await runner.cleanup()


def _serve_workers(settings: Settings, json_logs: bool, count: int, log_options: tuple[str, str]) -> None:
    """``serve --workers N`` (workers.py): migrate and provision here, once; then N workers. Each worker
    loads the TLS certificate and key itself (an SSL context does not cross processes)."""
    # Imported with the HTTP side, when serving starts (see ``_serve``).
    from kms_service.web.app import announce_keys
    from kms_service.web.sys_metrics import MULTIPROC_DIR_ENV

    if settings.url.startswith("sqlite") and make_url(settings.url).database in (None, "", ":memory:"):
        raise ServingFailed("an in-memory SQLite database lives in one process: use --workers 1")

    async def prepare() -> str:
        async with KMS.session(settings) as kms:  # migrate, master key, provision: once, before any worker
            await announce_keys(kms)
            return kms.master_key.origin

    try:
        bound = workers.check_port(settings.host, settings.port)
    except workers.WorkerFailed as exc:
        raise ServingFailed(str(exc)) from None
    origin = run_loop(prepare())
    signals = workers.Signals()
    # prometheus-client's multiprocess mode: each worker's metrics in files here, merged by every scrape. Set
    # before the workers start (they read it when they import prometheus_client); removed when serve ends.
    metrics_dir = tempfile.mkdtemp(prefix=f"kms-service-metrics-{os.getpid()}-")
    os.environ[MULTIPROC_DIR_ENV] = metrics_dir
    try:
        args = (replace(settings, prepared=True, port=bound), json_logs, log_options)
        signals.workers = started = workers.start(count, _serve_worker, args)
        try:
            workers.wait_ready(started, lambda: signals.received)
            if not signals.received:
                pids = ", ".join(str(w.process.pid) for w in started)
                scheme = "https" if settings.tls_cert is not None else "http"
                _announce(_banner(settings, bound, origin, f"{count} (pids {pids})", scheme), json_logs)
            workers.supervise(started, lambda: signals.received)
        except workers.WorkerFailed as exc:
            workers.stop(started)
            raise ServingFailed(f"{exc}; stopped the other workers") from None
    finally:
        signals.restore()
        shutil.rmtree(metrics_dir, ignore_errors=True)


def _serve_worker(
    settings: Settings, json_logs: bool, log_options: tuple[str, str], index: int, writer: Any, parent: int
) -> None:
    """A worker process of ``serve --workers`` (started by multiprocessing's spawn)."""
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # a SIGHUP passed on while starting must not end it
    workers.die_with_parent(parent)
    logs.setup(*log_options)
    try:
        tls = tls_context(settings)
        ready = lambda: workers.report_ready(writer)  # noqa: E731
        run_loop(_serve(replace(settings, worker=index), json_logs, ready=ready, tls=tls))
    except KMSError as exc:
        workers.report_error(writer, f"worker {index}: {exc.message}")
        raise SystemExit(1) from None
    except (DBAPIError, OSError, TimeoutError) as exc:  # e.g. the port, taken between the parent's check and bind
        workers.report_error(writer, f"worker {index}: {describe_fault(exc)}")
        raise SystemExit(1) from None
    except KeyboardInterrupt:  # SIGINT from a terminal before the event loop took the signal over
        raise SystemExit(0) from None
