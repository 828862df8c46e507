"""The HTTP edge: aiohttp's low-level ``web.Server`` in front of the service, through aiohttp's public API.

The service's one contract with HTTP is ``app.handle(IncomingRequest) -> replies.Answer``: this module builds
the ``IncomingRequest`` from aiohttp's ``web.BaseRequest`` and turns the ``Answer`` into a ``web.Response``.
No URL dispatcher and no ``web.Application``: the service's state and lifecycle are ``app.ServiceApp``'s,
and our router matches paths. Each connection's protocol is aiohttp's, wrapped in ``listener.py``'s, which
keeps the listener's limits. ``AppRunner`` is ``web.ServerRunner`` over that server; ``kms-service serve``
and the tests' server start it with ``web.TCPSite``.

Vault's ``LIST`` method (hvac's default ``list_keys``, node-vault, ``curl -X LIST``): aiohttp's C parser
(llhttp) knows a fixed set of methods and answers any other with a plain-text 400 before a handler runs;
its pure-Python parser takes any method token. aiohttp offers no public way to choose a parser per server
or per connection, only the documented ``AIOHTTP_NO_EXTENSIONS`` environment variable, read once when
aiohttp is imported. ``kms_service/__init__.py`` sets it before anything imports aiohttp (worker processes
inherit it), so every process of the service parses requests, and writes response heads, in Python.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import HttpVersion11, web

from kms_service.errors import ClientGone
from kms_service.web import replies
from kms_service.web.app import ServiceApp, handle
from kms_service.web.incoming import IncomingRequest
from kms_service.web.listener import Connection, Listener

log = logging.getLogger(__name__)


class RedactMalformedRequests(logging.Filter):
    """aiohttp logs a request it could not parse with the offending bytes, which may be a token: keep the
    line, drop the bytes. Its parse errors are its own exception types (none of them public); any other
    exception keeps its traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and type(record.exc_info[1]).__module__.startswith("aiohttp."):
            record.msg = "rejected a malformed HTTP request (%s)"
            record.args = (type(record.exc_info[1]).__name__,)
            record.exc_info = None
            record.exc_text = None
        return True


class _Body:
    """A request's body as aiohttp's ``StreamReader`` (``request.content``) receives it. ``broken``: its
    reading failed (the client went away, or aiohttp could not decode it: a ``Content-Encoding`` the bytes
    do not follow); aiohttp closes such a connection after the answer."""

    __slots__ = ("content", "connection", "broken")

    def __init__(self, content: Any, connection: Connection | None) -> None:
        self.content = content
        self.connection = connection
        self.broken = False

    def received(self) -> bytes | None:
        content = self.content
        return content.read_nowait() if content.is_eof() else None

    async def chunks(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self.content.iter_any():
                yield chunk
        except (ConnectionError, web.RequestPayloadError, asyncio.IncompleteReadError) as exc:
            self.broken = True
            raise ClientGone(type(exc).__name__) from None
        if self.connection is not None:
            self.connection.request_in()


class ServiceServer(web.Server):
    """aiohttp's low-level server answering with ``app.handle``; its connections keep the app's limits."""

    def __init__(self, app: ServiceApp, **kwargs: Any) -> None:
        self.app = app
        self.listener = Listener(app.listener_limits)
        self.event_loop = asyncio.get_running_loop()
        # auto_decompress=False: a body is read as sent, as Vault reads it. aiohttp would otherwise inflate a
        # Content-Encoding: gzip body as it arrives, on the event loop and past any size limit (a few hundred
        # KiB that inflate to gigabytes stall every other request while the node drains them).
        super().__init__(
            self.answer, keepalive_timeout=app.listener_limits.idle_timeout, auto_decompress=False, **kwargs
        )

    def __call__(self) -> Connection:
        """asyncio's protocol factory: aiohttp's protocol for a new connection, within the limits."""
        return Connection(super().__call__(), self.listener, self.event_loop)

    async def answer(self, request: web.BaseRequest) -> web.Response:
        connection = self.listener.by_transport.get(request.transport)
        content = request.content
        if connection is not None:
            if content.is_eof():
                connection.request_in()
            else:
                connection.body_pending()
        expect = request.headers.get("Expect")
        if expect is not None and request.version == HttpVersion11:
            # What aiohttp's URL dispatcher does for a route (this server has none): an interim 100 before the
            # body is read, and 417 for any other expectation, before the service sees the request.
            if expect.lower() != "100-continue":
                return web.Response(status=417, text=f"Unknown Expect: {expect}")
            await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            request.writer.output_size = 0
        body = _Body(content, connection)
        incoming = IncomingRequest(
            request.method,
            request.raw_path,
            request.path,
            request.query,
            request.headers,
            request.content_length,
            request.remote,
            body,
            self.app,
        )
        try:
            answer = await handle(incoming)
        except Exception:
            # handle maps every error to an answer itself; reaching here is a bug. Never the body: it may
            # hold plaintext.
            log.exception("%s %s failed", request.method, request.path)
            answer = replies.error(500, ["internal error"])
        if connection is not None:
            connection.answered()
        response = web.Response(body=answer.body, status=answer.status, headers=answer.headers)
        if body.broken:
            # The connection closes after this answer: say so (Connection: close), or a client keeping it
            # alive would send its next request into a closed socket.
            response.force_close()
        return response


class AppRunner(web.ServerRunner):
    """Runs a ``ServiceApp``: ``setup`` opens the service (its ``cleanup_ctx``) then the server, ``cleanup``
    closes both. Keyword arguments are ``web.Server``'s (aiohttp's connection options)."""

    def __init__(self, app: ServiceApp, **kwargs: Any) -> None:
        server_log = logging.getLogger("aiohttp.server")
        if not any(isinstance(f, RedactMalformedRequests) for f in server_log.filters):
            server_log.addFilter(RedactMalformedRequests())
        self.app = app
        super().__init__(ServiceServer(app, **kwargs))

    async def setup(self) -> None:
        await self.app.startup()
        await super().setup()

    async def cleanup(self) -> None:
        try:
            await super().cleanup()
        finally:
            await self.app.cleanup()
