"""The aiohttp application: one catch-all route into our router, errors mapped to HTTP in one place.

``create_app(settings)`` owns the service's lifecycle through aiohttp's ``cleanup_ctx``: opening the
database (migrate, unlock, provision), the background jobs, and closing it all again, in that order.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from aiohttp import web
from aiohttp.http_exceptions import BadHttpMessage

from kms_service.errors import (
    InternalError,
    KMSError,
    NotFound,
    PayloadTooLarge,
    PermissionDenied,
    UnsupportedOperation,
    UnsupportedPath,
    UserError,
)
from kms_service.service import KMS
from kms_service.settings import Settings
from kms_service.web import replies
from kms_service.web.paths import TABLE
from kms_service.web.routing import KMS_KEY, Router

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 32 * 1024 * 1024
ROUTER_KEY = web.AppKey("router", Router)
REAPER_KEY = web.AppKey("reaper", asyncio.Task)

# The one mapping from the error hierarchy to HTTP (most specific first).
STATUS_FOR_ERROR: tuple[tuple[type[KMSError], int], ...] = (
    (PermissionDenied, 403),
    (NotFound, 404),
    (UnsupportedPath, 404),
    (UnsupportedOperation, 405),
    (PayloadTooLarge, 413),
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
    except KMSError as exc:
        if isinstance(exc, InternalError):
            log.error("%s %s failed: %s", request.method, request.path, exc.message)
        return error_response(exc)
    except web.HTTPRequestEntityTooLarge:
        return error_response(PayloadTooLarge())
    except Exception:
        # Log the failure, never the request body: it may hold plaintext.
        log.exception("%s %s failed", request.method, request.path)
        return replies.error(500, ["internal error"])
    response = replies.success(reply, call.warnings() if call else [])
    if request.method == "HEAD":
        return web.Response(status=response.status, headers=replies.JSON_HEADERS)
    return response


async def reap_forever(kms: KMS, interval: float) -> None:
    while True:
        await asyncio.sleep(interval)
        try:
            await kms.tokens.reap()
        except Exception:
            log.exception("token reaper failed; retrying in %s s", interval)


def service_context(settings: Settings):
    async def service(app: web.Application) -> AsyncIterator[None]:
        app[KMS_KEY] = await KMS.open(settings)
        yield
        await app[KMS_KEY].close()

    return service


async def reaper(app: web.Application) -> AsyncIterator[None]:
    kms = app[KMS_KEY]
    app[REAPER_KEY] = asyncio.create_task(reap_forever(kms, kms.settings.reap_interval))
    yield
    app[REAPER_KEY].cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await app[REAPER_KEY]


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


def create_app(settings: Settings) -> web.Application:
    server_log = logging.getLogger("aiohttp.server")
    if not any(isinstance(f, RedactMalformedRequests) for f in server_log.filters):
        server_log.addFilter(RedactMalformedRequests())
    app = web.Application(client_max_size=MAX_BODY_BYTES)
    app[ROUTER_KEY] = Router(TABLE)
    app.router.add_route("*", r"/{tail:[\s\S]*}", handle)
    app.cleanup_ctx.extend([service_context(settings), reaper])
    return app
