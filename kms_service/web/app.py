"""The aiohttp application: one catch-all route into our router, errors mapped to HTTP in one place.

``create_app(settings)`` owns the service's lifecycle through aiohttp's ``cleanup_ctx``: opening the
database (migrate, unlock, provision), the background jobs, and closing it all again, in that order.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import BadHttpMessage

from kms_service.errors import (
    ClientGone,
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
from kms_service.settings import Settings
from kms_service.storage.engine import unavailable_reason
from kms_service.web import replies
from kms_service.web.faults import RateLimitedLog
from kms_service.web.fields import JsonLimits
from kms_service.web.framework import RequestLimits
from kms_service.web.paths import TABLE
from kms_service.web.routing import KMS_KEY, Router
from kms_service.web.server import LISTENER_KEY, ListenerLimits

log = logging.getLogger(__name__)

ROUTER_KEY = web.AppKey("router", Router)
JOBS_KEY = web.AppKey("background_jobs", list)
FAULTS_KEY = web.AppKey("faults", RateLimitedLog)

# The one mapping from the error hierarchy to HTTP (most specific first).
STATUS_FOR_ERROR: tuple[tuple[type[KMSError], int], ...] = (
    (PermissionDenied, 403),
    (NotFound, 404),
    (UnsupportedPath, 404),
    (UnsupportedOperation, 405),
    (PayloadTooLarge, 413),
    (RefusedAsServerError, 500),
    (UserError, 400),
    (InternalError, 500),
)


def error_response(exc: KMSError) -> web.Response:
    status = next((code for cls, code in STATUS_FOR_ERROR if isinstance(exc, cls)), 500)
    if isinstance(exc, NotFound):
        return replies.error(404, [])  # Vault's "nothing here" carries no message
    if isinstance(exc, UserError) and not exc.message:
        return replies.error(status, [])  # e.g. a bad ?list= value, which Vault answers with no message
    return replies.error(status, [exc.message or "internal error"])


async def handle(request: web.Request) -> web.StreamResponse:
    try:
        reply, call = await request.app[ROUTER_KEY].dispatch(request)
    except ClientGone as exc:
        # Nobody is left to answer; one line, not a traceback (and not one per request).
        request.app[FAULTS_KEY].log(
            logging.INFO, "client-gone", "a client went away before its request was read (%s)", exc.message
        )
        return replies.error(400, ["request body incomplete"])
    except KMSError as exc:
        if isinstance(exc, InternalError):
            log.error("%s %s failed: %s", request.method, request.path, exc.message)
        return error_response(exc)
    except web.HTTPRequestEntityTooLarge:
        return error_response(PayloadTooLarge())
    except Exception as exc:
        reason = unavailable_reason(exc)
        if reason is not None:
            # Every request meets it at once: one line, rate-limited, and Vault's 503.
            request.app[FAULTS_KEY].log(logging.ERROR, "database", "database unavailable: %s", reason)
            return replies.error(503, ["database unavailable"])
        # Log the failure, never the request body: it may hold plaintext.
        log.exception("%s %s failed", request.method, request.path)
        return replies.error(500, ["internal error"])
    response = replies.success(reply, call.warnings() if call else [])
    if request.method == "HEAD":
        return web.Response(status=response.status, headers=replies.JSON_HEADERS)
    return response


def service_context(settings: Settings):
    async def service(app: web.Application) -> AsyncIterator[None]:
        kms = app[KMS_KEY] = await KMS.open(settings)
        sources = await kms.keys.sources()
        log.info(
            "serving %d key(s) from the services YAML and %d made over HTTP",
            sources.get(SOURCE_CONFIG, 0),
            sources.get(SOURCE_API, 0),
        )
        yield
        await app[KMS_KEY].close()

    return service


def background_job(name: str, interval: Callable[[Settings], float], job: Callable[[KMS], Awaitable[Any]]):
    """A cleanup_ctx entry running ``job`` every ``interval`` seconds; a failing run is logged and retried."""

    async def run_forever(kms: KMS, faults: RateLimitedLog) -> None:
        period = interval(kms.settings)
        while True:
            await asyncio.sleep(period)
            try:
                await job(kms)
            except Exception as exc:
                reason = unavailable_reason(exc)
                if reason is None:
                    log.exception("%s failed; retrying in %s s", name, period)
                else:
                    faults.log(logging.ERROR, "database", "%s: database unavailable: %s", name, reason)

    async def context(app: web.Application) -> AsyncIterator[None]:
        task = asyncio.create_task(run_forever(app[KMS_KEY], app[FAULTS_KEY]), name=name)
        app[JOBS_KEY].append(task)
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    return context


token_reaper = background_job("token reaper", lambda s: s.reap_interval, lambda kms: kms.tokens.reap())
key_auto_rotation = background_job(
    "key auto-rotation", lambda s: s.rotate_check_interval, lambda kms: kms.keys.rotate_due()
)


class RedactMalformedRequests(logging.Filter):
    """aiohttp logs a malformed request with the offending bytes, which may be a token: keep the line,
    drop the bytes."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], BadHttpMessage):
            record.msg = "rejected a malformed HTTP request (%s)"
            record.args = (type(record.exc_info[1]).__name__,)
            record.exc_info = None
            record.exc_text = None
        return True


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


def create_app(settings: Settings) -> web.Application:
    server_log = logging.getLogger("aiohttp.server")
    if not any(isinstance(f, RedactMalformedRequests) for f in server_log.filters):
        server_log.addFilter(RedactMalformedRequests())
    limits = request_limits(settings)
    # The framework reads bodies itself, within each path's limit; this is aiohttp's own cap.
    app = web.Application(client_max_size=max(limits.max_body, limits.max_large_body))
    app[ROUTER_KEY] = Router(TABLE, limits)
    app[LISTENER_KEY] = ListenerLimits(
        header_read_timeout=settings.header_read_timeout,
        request_read_timeout=settings.request_read_timeout,
        idle_timeout=settings.idle_timeout,
        max_connections=settings.max_connections,
    )
    app.router.add_route("*", r"/{tail:[\s\S]*}", handle)
    app[JOBS_KEY] = []
    app[FAULTS_KEY] = RateLimitedLog(log)
    app.cleanup_ctx.extend([service_context(settings), token_reaper, key_auto_rotation])
    return app
