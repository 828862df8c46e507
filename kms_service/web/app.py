"""The service behind HTTP: ``handle(IncomingRequest) -> Answer`` into our router, errors mapped to HTTP in
one place. The edge (``server.py``) is the only part that knows aiohttp.

``create_app(settings)`` makes the ``ServiceApp``: the service's state by key, and its lifecycle as a list of
contexts (``cleanup_ctx``): opening the database (migrate, unlock, provision), the background jobs, and
closing it all again, in reverse order.

Every request gets an id (``X-Request-Id`` and Vault's ``request_id``), is counted in the metrics by route
template, method and status, and, with ``Settings.access_log``, makes one log line (``kms_service.access``):
request id, method, route template, status, latency and the token's accessor. Never a token, a body, a
query string or a key name.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import secrets
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from kms_service.errors import (
    AuditUnavailable,
    ClientGone,
    DatabaseUnavailable,
    InternalError,
    KMSError,
    NotFound,
    PayloadTooLarge,
    PermissionDenied,
    RefusedAsServerError,
    UnsupportedOperation,
    UnsupportedPath,
    UserError,
)
from kms_service.service import KMS
from kms_service.service.keys import SOURCE_API, SOURCE_CONFIG
from kms_service.service.master_keys import CHECK_INTERVAL as MASTER_KEY_CHECK_INTERVAL
from kms_service.service.usage import FLUSH_INTERVAL as USAGE_FLUSH_INTERVAL
from kms_service.settings import Settings
from kms_service.storage.database import busy_reason, unavailable_reason
from kms_service.web import replies
from kms_service.web.body import RequestLimits
from kms_service.web.console import Console
from kms_service.web.faults import FAULTS_KEY, RateLimitedLog
from kms_service.web.fields import JsonLimits
from kms_service.web.framework import Call
from kms_service.web.incoming import IncomingRequest
from kms_service.web.listener import ListenerLimits
from kms_service.web.paths import TABLE
from kms_service.web.replies import Answer, Reply
from kms_service.web.request_audit import AUDIT_KEY, REFUSED, REQUEST_ID_KEY, audit_context, audited, record_response
from kms_service.web.routing import CALL_KEY, KMS_KEY, ROUTER_KEY, Router
from kms_service.web.sys_metrics import METRICS_KEY, Metrics

log = logging.getLogger(__name__)
access_log = logging.getLogger("kms_service.access")

JOBS_KEY = "background_jobs"
CONSOLE_KEY = "console"
CONSOLE_ROUTE = "ui/*file"  # the console's files, counted as one route
ACCESS_LOG_KEY = "access_log"

ServiceContext = Callable[["ServiceApp"], AsyncIterator[None]]


class ServiceApp(dict[Any, Any]):
    """The service's state by key (the router, the KMS once open, the metrics, ...), and its lifecycle:
    ``cleanup_ctx``, async generator functions of the app, each run up to its ``yield`` by ``startup`` in
    order and past it by ``cleanup`` in reverse order (aiohttp's ``cleanup_ctx`` contract, without aiohttp)."""

    def __init__(self, listener_limits: ListenerLimits) -> None:
        super().__init__()
        self.listener_limits = listener_limits
        self.cleanup_ctx: list[ServiceContext] = []
        self.running = contextlib.AsyncExitStack()

    async def startup(self) -> None:
        try:
            for context in self.cleanup_ctx:
                await self.running.enter_async_context(contextlib.asynccontextmanager(context)(self))
        except BaseException:
            await self.cleanup()  # what started is stopped again, in reverse order
            raise

    async def cleanup(self) -> None:
        running, self.running = self.running, contextlib.AsyncExitStack()
        await running.aclose()

    # A mapping that is one app, not a value: equal to itself alone, and usable as a key.
    __eq__ = object.__eq__
    __hash__ = object.__hash__


# The one mapping from the error hierarchy to HTTP (most specific first).
STATUS_FOR_ERROR: tuple[tuple[type[KMSError], int], ...] = (
    (PermissionDenied, 403),
    (NotFound, 404),
    (UnsupportedPath, 404),
    (UnsupportedOperation, 405),
    (PayloadTooLarge, 413),
    (RefusedAsServerError, 500),
    (DatabaseUnavailable, 503),
    (UserError, 400),
    (InternalError, 500),
)


def error_response(exc: KMSError) -> Answer:
    status = next((code for cls, code in STATUS_FOR_ERROR if isinstance(exc, cls)), 500)
    if isinstance(exc, NotFound):
        return replies.error(404, [])  # Vault's "nothing here" carries no message
    if isinstance(exc, UserError) and not exc.message:
        return replies.error(status, [])  # e.g. a bad ?list= value, which Vault answers with no message
    return replies.error(status, [exc.message or "internal error"])


# Request ids look like Vault's (a UUID, version 4 and variant bits set): a random prefix per process and a
# counter, unique without a uuid4 (16 random bytes and a UUID object) per request. They identify, never
# authorise, so being predictable within a process costs nothing.
def _request_id_prefix() -> str:
    """A random version-4 UUID's text up to its last group (8-4-4-4-), made once per process."""
    return str(uuid.uuid4())[:24]


_REQUEST_ID_PREFIX = _request_id_prefix()
_request_numbers = itertools.count(secrets.randbelow(1 << 40))


def new_request_id() -> str:
    return f"{_REQUEST_ID_PREFIX}{next(_request_numbers) & 0xFFFFFFFFFFFF:012x}"


async def handle(request: IncomingRequest) -> Answer:
    """Every request's answer."""
    started = time.perf_counter()
    request_id = request[REQUEST_ID_KEY] = new_request_id()
    console = request.app.get(CONSOLE_KEY)
    if console is not None and console.serves(request.path):
        # Static files, answered before the router: no token, no audit record, nothing of the service's.
        response = console.answer(request.method, request.path)
        response.headers["X-Request-Id"] = request_id
        elapsed = time.perf_counter() - started
        request.app[METRICS_KEY].observe(CONSOLE_ROUTE, request.method, response.status, elapsed, None)
        return response
    response, reply, error = await _answer(request, request_id)
    call = request.get(CALL_KEY)
    audit = request.app.get(AUDIT_KEY)
    if audit is not None and audited(call):
        if not await record_response(audit, request, call, request_id, response.status, reply, error):
            # The answer must not leave unrecorded: refuse it, even though the operation ran.
            request.app[FAULTS_KEY].log(logging.ERROR, "audit", "%s; refusing requests", audit.last_error)
            response = replies.error(503, [REFUSED])
    response.headers["X-Request-Id"] = request_id
    elapsed = time.perf_counter() - started
    route = call.path.pattern if call is not None and call.path is not None else None
    request.app[METRICS_KEY].observe(route, request.method, response.status, elapsed, call)
    if request.app[ACCESS_LOG_KEY]:
        _log_access(request, request_id, route, response.status, elapsed, call)
    return response


async def _answer(request: IncomingRequest, request_id: str) -> tuple[Answer, Reply | None, str]:
    """The answer, and for the audit log: the reply it was made of, or the error it reports."""
    try:
        reply, call = await request.app[ROUTER_KEY].dispatch(request)
        if call is not None and call.wrap_ttl is not None and reply.wrappable and request.method != "HEAD":
            reply = await wrap_reply(call, reply, request_id)
    except ClientGone as exc:
        # Nobody is left to answer; one line, not a traceback (and not one per request).
        request.app[FAULTS_KEY].log(
            logging.INFO, "client-gone", "a client went away before its request was read (%s)", exc.message
        )
        return replies.error(400, ["request body incomplete"]), None, "request body incomplete"
    except AuditUnavailable as exc:
        audit = request.app.get(AUDIT_KEY)
        reason = audit.last_error if audit is not None else None
        request.app[FAULTS_KEY].log(logging.ERROR, "audit", "%s; refusing requests", reason)
        return replies.error(503, [exc.message]), None, exc.message
    except KMSError as exc:
        if isinstance(exc, InternalError):
            log.error("%s %s failed: %s", request.method, request.path, exc.message, extra={"request_id": request_id})
        return error_response(exc), None, exc.message or ""
    except Exception as exc:
        busy = busy_reason(exc)
        if busy is not None:
            # A lock held elsewhere, for longer than --database-lock-timeout: the client may retry.
            message = f"database busy: {busy} (waited --database-lock-timeout); retry later"
            request.app[FAULTS_KEY].log(logging.WARNING, "database-busy", "%s", message)
            return replies.error(503, [message]), None, message
        reason = unavailable_reason(exc)
        if reason is not None:
            # Every request meets it at once: one line, rate-limited, and Vault's 503.
            request.app[FAULTS_KEY].log(logging.ERROR, "database", "database unavailable: %s", reason)
            return replies.error(503, ["database unavailable"]), None, "database unavailable"
        # Log the failure, never the request body: it may hold plaintext.
        log.exception("%s %s failed", request.method, request.path, extra={"request_id": request_id})
        return replies.error(500, ["internal error"]), None, "internal error"
    response = replies.success(reply, call.warnings() if call else [], request_id)
    if request.method == "HEAD":
        return Answer(response.status, {**replies.JSON_HEADERS}), reply, ""
    return response, reply, ""


async def wrap_reply(call: Call, reply: Reply, request_id: str) -> Reply:
    """Vault's response wrapping: the answer as it would have been sent is kept sealed under a new single-use
    wrapping token, and the caller gets only that token's ``wrap_info``."""
    assert call.wrap_ttl is not None
    if reply.body is not None:  # an unwrapped response, wrapped again
        response = reply.body
    else:
        response = replies.success(reply, call.warnings(), request_id).body or b""
    wrapped_accessor = reply.auth.get("accessor") if reply.auth is not None else None
    info = await call.kms.wrapped_responses.wrap(response, call.acl_path, call.wrap_ttl, wrapped_accessor)
    return Reply(wrap_info=info.as_vault())


def _log_access(
    request: IncomingRequest, request_id: str, route: str | None, status: int, elapsed: float, call: Call | None
) -> None:
    principal = call.principal if call is not None else None
    fields = {
        "request_id": request_id,
        "method": request.method,
        "route": route or "unmatched",
        "status": status,
        "duration_ms": round(elapsed * 1000, 3),
        "accessor": principal.info.accessor if principal is not None else None,
        "remote": request.remote,
    }
    access_log.info("%s %s %d", fields["method"], fields["route"], status, extra=fields)


def service_context(settings: Settings, announce: bool = True):
    async def service(app: ServiceApp) -> AsyncIterator[None]:
        kms = app[KMS_KEY] = await KMS.open(settings)
        try:
            await kms.start_cluster()
        except BaseException:
            await kms.close()
            raise
        app[METRICS_KEY].watch(kms)
        if announce:
            await announce_keys(kms)
        yield
        await app[KMS_KEY].close()

    return service


async def announce_keys(kms: KMS) -> None:
    sources = await kms.keys.sources()
    log.info(
        "serving %d key(s) from the services YAML and %d made over HTTP",
        sources.get(SOURCE_CONFIG, 0),
        sources.get(SOURCE_API, 0),
    )


# The names of the background jobs' tasks, so a statement can be told apart from the request path's.
BACKGROUND_JOBS: set[str] = set()


def background_job(
    name: str,
    interval: Callable[[Settings], float],
    job: Callable[[KMS], Awaitable[Any]],
    every_node: bool = False,
):
    """A cleanup_ctx entry running ``job`` every ``interval`` seconds; a failing run is logged and retried.
    Nodes sharing PostgreSQL run it one at a time: the node holding the job's advisory lock (``KMS.leads``),
    unless ``every_node`` (a job over this process's own state)."""

    async def run_forever(kms: KMS, faults: RateLimitedLog) -> None:
        period = interval(kms.settings)
        while True:
            await asyncio.sleep(period)
            try:
                if every_node or await kms.leads(name):
                    await job(kms)
            except DatabaseUnavailable:
                pass  # an outage this node knows of and has logged; the next run tries again
            except Exception as exc:
                reason = unavailable_reason(exc)
                if reason is None:
                    log.exception("%s failed; retrying in %s s", name, period)
                else:
                    faults.log(logging.ERROR, "database", "%s: database unavailable: %s", name, reason)

    BACKGROUND_JOBS.add(name)

    async def context(app: ServiceApp) -> AsyncIterator[None]:
        task = asyncio.create_task(run_forever(app[KMS_KEY], app[FAULTS_KEY]), name=name)
        app[JOBS_KEY].append(task)
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    return context


async def reap_expired(kms: KMS) -> None:
    """Expired tokens, and wrapped responses whose wrapping token expired unread."""
    await kms.tokens.reap()
    await kms.wrapped_responses.reap()


token_reaper = background_job("token reaper", lambda s: s.reap_interval, reap_expired)
key_auto_rotation = background_job(
    "key auto-rotation", lambda s: s.rotate_check_interval, lambda kms: kms.mounts.rotate_due()
)


# Each process gives back its own unused usage reservations.
async def metrics_sync(app: ServiceApp) -> AsyncIterator[None]:
    """serve --workers: copy this worker's plain counters into the shared metrics files every second."""
    task = asyncio.create_task(app[METRICS_KEY].sync_forever(), name="metrics sync")
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


usage_flush = background_job(
    "usage flush", lambda s: USAGE_FLUSH_INTERVAL, lambda kms: kms.usage.flush(), every_node=True
)
# Each process follows a master-key rotation: seal under the new key, drop the old once it is retired.
master_key_check = background_job(
    "master-key check", lambda s: MASTER_KEY_CHECK_INTERVAL, lambda kms: kms.master_keys.refresh(), every_node=True
)


def request_limits(settings: Settings) -> RequestLimits:
    return RequestLimits(
        max_body=settings.max_request_bytes,
        max_large_body=settings.max_batch_request_bytes,
        json=JsonLimits(
            depth=settings.max_json_depth,
            string_length=settings.max_json_string_length,
            entries=settings.max_json_entries,
            tokens=settings.max_json_tokens,
        ),
        max_batch_items=settings.max_batch_items,
    )


def create_app(settings: Settings, *, announce: bool = True) -> ServiceApp:
    """``announce``: log the served keys once open (``serve --workers``: the parent does, not every worker)."""
    app = ServiceApp(
        ListenerLimits(
            header_read_timeout=settings.header_read_timeout,
            request_read_timeout=settings.request_read_timeout,
            idle_timeout=settings.idle_timeout,
            max_connections=settings.max_connections,
            max_connections_per_address=settings.max_connections_per_address,
        )
    )
    # The framework reads bodies itself, within each path's limit.
    app[ROUTER_KEY] = Router(TABLE, request_limits(settings))
    app[JOBS_KEY] = []
    app[METRICS_KEY] = Metrics(settings.worker)
    app[ACCESS_LOG_KEY] = settings.access_log
    if settings.console:
        app[CONSOLE_KEY] = Console()
    app[FAULTS_KEY] = RateLimitedLog(log)
    app.cleanup_ctx.extend(
        [
            service_context(settings, announce),
            audit_context(settings),
            token_reaper,
            key_auto_rotation,
            usage_flush,
            master_key_check,
        ]
    )
    if settings.worker is not None:
        app.cleanup_ctx.append(metrics_sync)
    return app
