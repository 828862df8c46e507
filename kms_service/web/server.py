"""The HTTP server: aiohttp's, taught Vault's ``LIST`` method (hvac's ``list_keys``, ``curl -X LIST``).

aiohttp parses requests with llhttp (C), which knows a fixed set of methods and answers any other, LIST
included, with a plain-text 400 before a handler runs. aiohttp's pure-Python parser takes any method, but
costs about 34 µs more per request, some 10% of encrypt throughput here (README, "Tests and benchmark"). So
a connection starts on the C parser, and moves to the Python parser for the rest of its life when the C
parser refuses a read that starts with ``LIST `` (llhttp refuses a method only at the start of a message, so
that read starts a request). The Python parser parses that read again and everything after it. No other
request is parsed differently: the switch happens only where the C parser has already failed the
connection. A LIST that does not start a read (pipelined behind another request in the same read, or split
within its first five bytes) is still refused; no client of Vault's sends one.

The protocol also enforces the listener's limits, after Vault's (``ListenerLimits``, from the app's
``LISTENER_KEY``): a request's headers must arrive within ``header_read_timeout`` of its first byte (of the
connection, for the first request), the whole request within ``request_read_timeout``; an idle keep-alive
connection is closed after ``idle_timeout`` (aiohttp's keep-alive timer); past ``max_connections`` open
connections a new one is answered 503 and closed at once. A timed-out connection is closed without an
answer, as Go's server does, and logged as one line (rate-limited).

A request that arrives whole on a kept-alive connection whose earlier requests are answered is answered on
the direct lane (``direct.py``): the protocol calls the app's handler itself, in one task per run of such
requests, and writes the response as one buffer. The connection's aiohttp task stays parked meanwhile; the
first request that is not eligible (and everything behind it, in order) goes back to it. A request read
while aiohttp's task is not parked (not yet started, or not yet back from its last answer: uvloop reads
sockets before it runs the callbacks that wake tasks) is held out of that task's queue until the run's
first step, when the task has either parked (the run answers it) or is still answering one before it (the
request goes back to the task, in front of its queue).

``AppRunner`` is aiohttp's with this protocol; ``kms-service serve`` and the tests' server use it.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web, web_protocol, web_server
from aiohttp.http_exceptions import BadHttpMethod
from aiohttp.http_parser import HttpRequestParserPy

from kms_service.web import replies
from kms_service.web.direct import DirectRequest, eligible, received_body, serialize
from kms_service.web.faults import RateLimitedLog

LIST_REQUEST = b"LIST "
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ListenerLimits:
    """Seconds, and a count (0: no limit)."""

    header_read_timeout: float = 10.0
    request_read_timeout: float = 30.0
    idle_timeout: float = 300.0
    max_connections: int = 512


LISTENER_KEY = web.AppKey("listener_limits", ListenerLimits)
# The app's request handler, for the direct lane (``direct.py``); without it every request goes through aiohttp.
DirectHandler = Callable[[Any], Awaitable[Any]]  # DirectRequest → replies.Answer
DIRECT_HANDLER_KEY = web.AppKey("direct_handler", object)

_TOO_MANY_BODY = json.dumps({"errors": ["too many open connections; try again later"]}).encode()
TOO_MANY_CONNECTIONS = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
    b"Content-Length: " + str(len(_TOO_MANY_BODY)).encode() + b"\r\nConnection: close\r\n\r\n" + _TOO_MANY_BODY
)


class _ParserWithListFallback:
    """The connection's C parser, until it refuses a ``LIST``: then the Python parser takes its place."""

    __slots__ = ("_parser", "_protocol", "_python_parser")

    def __init__(self, protocol: _Protocol, python_parser: Any) -> None:
        self._protocol = protocol
        self._parser = protocol._parser
        self._python_parser = python_parser

    def feed_data(self, data: bytes) -> Any:
        try:
            return self._parser.feed_data(data)
        except BadHttpMethod:
            if not data.startswith(LIST_REQUEST):
                raise
        parser = self._python_parser()
        self._protocol._parser = parser
        return parser.feed_data(data)

    def message_consumed(self) -> None:
        self._parser.message_consumed()

    def __getattr__(self, name: str) -> Any:  # pause_reading, set_upgraded, feed_eof, ...
        return getattr(self._parser, name)


def _read_ends_at_a_boundary(data: bytes, message: Any, payload: Any) -> bool:
    """Whether ``data``, the read that completed ``message``, ends with it: no byte of a next request
    behind it in the parser. Told from how the message ends (its header block; its body, whole in this read
    right after the header block, or this read being only body; a chunked body's last chunk). When unsure,
    no: the next request's timers start, and at worst an idle connection is closed after the header timeout
    rather than the idle one."""
    if getattr(message, "chunked", False):
        return data.endswith(b"0\r\n\r\n")
    body = received_body(payload)
    if not body:
        return data.endswith(b"\r\n\r\n")
    size = len(body)
    if len(data) >= size + 4:  # the header block's end, then the whole body, then nothing
        return data.endswith(body) and data[len(data) - size - 4 : len(data) - size] == b"\r\n\r\n"
    return body.endswith(data)  # this read was body only


class _Protocol(web_protocol.RequestHandler):
    __slots__ = (
        "_limits",
        "_faults",
        "_header_timer",
        "_request_timer",
        "_awaiting_headers",
        "_payload",
        "_message",
        "_refused",
        "_app",
        "_direct_handler",
        "_direct_run",
        "_held",
    )

    def __init__(
        self,
        manager: web_server.Server,
        *,
        loop: asyncio.AbstractEventLoop,
        limits: ListenerLimits,
        app: web.Application | None = None,
        direct_handler: DirectHandler | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(manager, loop=loop, **kwargs)
        # The Python parser gets the arguments RequestHandler gives the C one.
        options: dict[str, Any] = {
            "limit": self._read_bufsize,
            "max_line_size": self.max_line_size,
            "max_field_size": self.max_field_size,
            "max_headers": self.max_headers,
            "payload_exception": web_protocol.RequestPayloadError,
            "auto_decompress": kwargs.get("auto_decompress", True),
        }
        if hasattr(web_protocol, "MAX_MSG_QUEUE_SIZE"):
            options["max_msg_queue_size"] = web_protocol.MAX_MSG_QUEUE_SIZE
        self._parser = _ParserWithListFallback(self, lambda: HttpRequestParserPy(self, loop, **options))
        self._limits = limits
        self._faults: RateLimitedLog = getattr(manager, "faults", None) or RateLimitedLog(log)
        self._header_timer: asyncio.TimerHandle | None = None
        self._request_timer: asyncio.TimerHandle | None = None
        self._awaiting_headers = True  # no request is being received (its headers are awaited)
        self._payload: Any = None  # the body of the request being received
        self._message: Any = None  # and its head
        self._refused = False
        self._app = app
        self._direct_handler = direct_handler if app is not None else None
        # The task answering requests on the direct lane, while there is one. Meanwhile the queue of parsed
        # requests (aiohttp's ``_messages``) is its own, and aiohttp's task stays parked on its waiter.
        self._direct_run: asyncio.Task[None] | None = None
        # Requests a starting run took out of aiohttp's queue while aiohttp's task was not parked.
        self._held: deque[Any] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        manager = self._manager
        limit = self._limits.max_connections
        if limit and manager is not None and len(manager.connections) >= limit:
            self._refused = True
            transport.write(TOO_MANY_CONNECTIONS)  # type: ignore[attr-defined]
            transport.close()
            self._faults.log(
                logging.WARNING,
                "max-connections",
                "refused a connection: %d are open (--max-connections %d)",
                len(manager.connections),
                limit,
            )
            return
        super().connection_made(transport)
        self._start_request_timers()

    def connection_lost(self, exc: BaseException | None) -> None:
        self._cancel_timers()
        if self._refused:
            return
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        if self._direct_handler is None:
            self._receive(data)
            return
        waiter = self._waiter
        parked = waiter is not None and not waiter.done()
        run = self._direct_run
        if run is None and (self._messages or (waiter is not None and not parked)):
            # aiohttp's task has requests queued, or is woken to take them: what follows is its own too.
            self._receive(data)
            return
        # The direct lane's run owns the queue, or nobody does yet: aiohttp's task is parked on its waiter,
        # or has not taken a request since its last answer (it may still be writing it). A parked waiter is
        # hidden from aiohttp's data_received, which then queues what it parses without waking the task.
        if parked:
            self._waiter = None
        try:
            self._receive(data)
        finally:
            if parked:
                self._waiter = waiter
        if self._held is not None:  # a run is starting: what came now queues behind what it holds
            self._hold()
            return
        if run is not None or not self._messages:
            return
        message, payload = self._messages[0]
        if eligible(message, payload) and not self._force_close:
            if not parked:
                # aiohttp's task is between requests: under uvloop a client's next request can be read before
                # the task wakes from its last answer (a third to a half of them at 32 connections here). The run
                # holds the queue out of the task's sight until it next runs, which is after the task has
                # woken (call_soon's order) and either parked (answers written) or kept going (the queue
                # goes back to it, in front).
                self._hold()
            self._direct_run = self._loop.create_task(self._answer_directly())
        elif parked:
            waiter.set_result(None)

    def _hold(self) -> None:
        """Move aiohttp's queue behind the requests a starting run holds, keeping aiohttp's flow control:
        its parser stops emitting requests once as many as the queue holds are unconsumed, and only a paused
        transport is ever resumed (which makes the parser go on). aiohttp counts its queue alone; held
        requests count too (uvloop reads a socket several times in one turn, so several reads can land here
        before the run's first step)."""
        held = self._held
        if held is None:
            self._held = held = deque()
        held.extend(self._messages)
        self._messages.clear()
        if not self._buffer_paused and len(held) >= self._max_msg_queue_size:
            self._pause_reading_for_buffer()

    def _receive(self, data: bytes) -> None:
        # The first byte of the next request on a kept-alive connection. Its clocks start only if this read
        # leaves it incomplete: a request that arrives in one read (nearly all) costs no timer.
        starting = self._awaiting_headers and self._header_timer is None and self._request_timer is None
        count = self._request_count
        super().data_received(data)
        if self._request_count != count:  # a request's headers are complete
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None
            self._awaiting_headers = False
            self._message, self._payload = self._messages[-1] if self._messages else (None, None)
        if not self._awaiting_headers and (self._payload is None or self._payload.is_eof()):
            self._cancel_timers()  # the whole request is in; the next one's timers start at its first byte
            behind = data and not _read_ends_at_a_boundary(data, self._message, self._payload)
            self._awaiting_headers = True
            self._message = self._payload = None
            if behind and not self._refused and self.transport is not None:
                # Bytes of the next request came in behind it, in this read: that request's clocks start now.
                self._start_request_timers()
        elif data and starting and not self._refused and self.transport is not None:
            # (Not on the empty feed aiohttp makes to resume parsing after each body read: no byte came.)
            self._start_request_timers(headers=self._awaiting_headers)

    async def _answer_directly(self) -> None:
        """Answer the queue's eligible requests in order; hand the first other one (and the rest) back to
        aiohttp's task."""
        messages = self._messages
        try:
            held, self._held = self._held, None
            if held is not None:
                messages.extendleft(reversed(held))
                waiter = self._waiter
                if waiter is None or waiter.done():  # aiohttp's task is answering an earlier one: its own
                    return
            while messages and not self._force_close and self.transport is not None:
                message, payload = messages[0]
                if not eligible(message, payload):
                    break
                messages.popleft()
                if self._parser is not None:
                    self._parser.message_consumed()
                if self._buffer_paused and len(messages) <= self._msg_queue_resume_size:
                    self._resume_reading_if_drained()
                if not await self._answer_one(message, payload):
                    return
        finally:
            self._direct_run = None
            waiter = self._waiter
            if messages and waiter is not None and not waiter.done():
                waiter.set_result(None)  # aiohttp's task takes the rest, in order
            if self._keepalive_timeout > 0 and not self._force_close and self.transport is not None:
                self._idle_from_now()

    async def _answer_one(self, message: Any, payload: Any) -> bool:
        """One request on the direct lane; False when the connection is to be closed."""
        assert self._app is not None and self._direct_handler is not None
        manager = self._manager
        if manager is not None:
            manager.requests_count += 1
            manager.direct_answers += 1  # type: ignore[attr-defined]
        try:
            answer = await self._direct_handler(DirectRequest(self._app, message, payload, self.transport))
            data = serialize(answer)
        except Exception:
            # The handler maps every error to an answer itself; reaching here is a bug. Never the body: it
            # may hold plaintext.
            log.exception("%s %s failed", message.method, message.url.path)
            # Vault's envelope, and the connection closed after it: its state is not known.
            self._write(serialize(replies.error(500, ["internal error"])))
            self.force_close()
            return False
        if not self._write(data):
            return False
        if self._paused:  # the client reads slower than we answer: wait for its buffer to drain
            try:
                await self._drain_helper()
            except ConnectionError:
                return False
        return True

    def _write(self, data: bytes) -> bool:
        transport = self.transport
        if transport is None or transport.is_closing():
            return False
        transport.write(data)
        return True

    def _process_keepalive(self) -> None:
        self._keepalive_handle = None
        if self._direct_run is not None:  # answering on the direct lane: not idle
            self._idle_from_now()
            return
        super()._process_keepalive()

    def _idle_from_now(self) -> None:
        """The idle timeout counts from now (aiohttp's keep-alive timer, which reschedules itself when it
        fires early)."""
        self._next_keepalive_close_time = self._loop.time() + self._keepalive_timeout
        if self._keepalive_handle is None:
            self._keepalive_handle = self._loop.call_at(self._next_keepalive_close_time, self._process_keepalive)

    async def shutdown(self, timeout: float | None = 15.0) -> None:  # noqa: ASYNC109 - aiohttp's signature
        # Stop taking requests, let the direct lane finish the one it is answering, then aiohttp's shutdown.
        self._force_close = True
        run = self._direct_run
        started = self._loop.time()
        if run is not None and not run.done():
            done, _ = await asyncio.wait([run], timeout=timeout)
            if not done:
                run.cancel()  # as aiohttp cancels its own handler past the timeout
        if timeout is not None:  # what is left of it, never 0 (which aiohttp's ceil_timeout takes as no limit)
            timeout = max(0.1, timeout - (self._loop.time() - started))
        await super().shutdown(timeout)

    def _start_request_timers(self, headers: bool = True) -> None:
        if headers:
            self._header_timer = self._loop.call_later(self._limits.header_read_timeout, self._timed_out, "headers")
        self._request_timer = self._loop.call_later(self._limits.request_read_timeout, self._timed_out, "request")

    def _cancel_timers(self) -> None:
        for timer in (self._header_timer, self._request_timer):
            if timer is not None:
                timer.cancel()
        self._header_timer = self._request_timer = None

    def _timed_out(self, what: str) -> None:
        if what == "headers":
            self._header_timer = None
            text, limit = "its request headers", self._limits.header_read_timeout
        else:
            self._request_timer = None
            text, limit = "its request", self._limits.request_read_timeout
        self._faults.log(
            logging.INFO, f"timeout-{what}", "closed a connection that did not send %s within %s s", text, limit
        )
        self._cancel_timers()
        self.force_close()
        if self.transport is not None:
            self.transport.close()


class _Server(web_server.Server):
    limits = ListenerLimits()
    faults = RateLimitedLog(log)
    app: web.Application | None = None
    direct_handler: DirectHandler | None = None
    direct_answers = 0  # requests answered on the direct lane (of ``requests_count``, aiohttp's: all of them)

    def __call__(self) -> web_protocol.RequestHandler:
        return _Protocol(
            self,
            loop=self._loop,
            limits=self.limits,
            app=self.app,
            direct_handler=self.direct_handler,
            **self._kwargs,
        )


class AppRunner(web.AppRunner):
    """``web.AppRunner`` whose connections accept ``LIST`` and keep the app's ``ListenerLimits``."""

    async def _make_server(self) -> web_server.Server:
        server = await super()._make_server()
        limits = self.app.get(LISTENER_KEY) or ListenerLimits()
        kwargs = {**server._kwargs, "keepalive_timeout": limits.idle_timeout}
        result = _Server(
            server.request_handler,
            request_factory=server.request_factory,
            handler_cancellation=server.handler_cancellation,
            loop=server._loop,
            **kwargs,
        )
        result.limits = limits
        result.faults = RateLimitedLog(log)
        handler = self.app.get(DIRECT_HANDLER_KEY)
        # The direct lane skips aiohttp's handler chain: only for an app that adds nothing to it.
        if handler is not None and not self.app.middlewares and not self.app.on_response_prepare:
            result.app = self.app
            result.direct_handler = handler  # type: ignore[assignment]
        return result
