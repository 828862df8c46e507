"""The listener's limits, after Vault's (``ListenerLimits``): a connection's protocol wrapped around the
one aiohttp's ``web.Server`` makes, through asyncio's public protocol methods.

A request's headers must arrive within ``header_read_timeout`` of its first byte (of the connection, for
the first request), the whole request within ``request_read_timeout``; an idle keep-alive connection is
closed after ``idle_timeout`` (aiohttp's ``keepalive_timeout``); past ``max_connections`` open connections a
new one is answered 503 and closed at once. A timed-out connection is closed without an answer, as Go's
server does, and logged as one line (rate-limited).

The clocks are deadlines, not a timer per request: a request's first byte sets them (two floats), the edge
clears them when aiohttp hands it the request (headers in) and when its body is in, and one timer per
connection, armed only when a deadline is set and none runs, checks them when it fires (re-arming itself
for a deadline still ahead). A request that arrives whole in one read arms no timer of its own. Bytes of a
next request that come while one is answered (pipelining) start its clocks once that answer is handed over,
since aiohttp hands the next request over only then. A request begun behind complete ones in the same read
gets the idle timeout, not the header one: nothing public tells where aiohttp's parser stopped.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass
from typing import Any

from kms_service.settings import DEFAULTS
from kms_service.web.faults import RateLimitedLog

log = logging.getLogger(__name__)

_TOO_MANY_BODY = json.dumps({"errors": ["too many open connections; try again later"]}).encode()
TOO_MANY_CONNECTIONS = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
    b"Content-Length: " + str(len(_TOO_MANY_BODY)).encode() + b"\r\nConnection: close\r\n\r\n" + _TOO_MANY_BODY
)


@dataclass(frozen=True)
class ListenerLimits:
    """Seconds, and a count (0: no limit)."""

    header_read_timeout: float = DEFAULTS.header_read_timeout
    request_read_timeout: float = DEFAULTS.request_read_timeout
    idle_timeout: float = DEFAULTS.idle_timeout
    max_connections: int = DEFAULTS.max_connections


class Listener:
    """The open connections of one listening server, by transport (the edge finds a request's connection by
    its transport), and what they share: the limits and the rate-limited log."""

    def __init__(self, limits: ListenerLimits) -> None:
        self.limits = limits
        self.faults = RateLimitedLog(log)
        self.by_transport: dict[Any, Connection] = {}


class Connection(asyncio.Protocol):
    """One connection: aiohttp's protocol for it, within the limits."""

    __slots__ = (
        "inner",
        "listener",
        "loop",
        "transport",
        "header_deadline",
        "request_deadline",
        "timer",
        "answering",
        "next_waits",
    )

    def __init__(self, inner: asyncio.Protocol, listener: Listener, loop: asyncio.AbstractEventLoop) -> None:
        self.inner = inner
        self.listener = listener
        self.loop = loop
        self.transport: Any = None
        # When the request being received must have its headers, and be whole (None: not being received).
        self.header_deadline: float | None = None
        self.request_deadline: float | None = None
        self.timer: asyncio.TimerHandle | None = None
        # A request is in whole and being answered; bytes of the next one came meanwhile (a pipelining
        # client): aiohttp hands that one over only once this answer is written, so its clocks start then.
        self.answering = False
        self.next_waits = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        listener = self.listener
        limit = listener.limits.max_connections
        open_now = len(listener.by_transport)
        if limit and open_now >= limit:
            transport.write(TOO_MANY_CONNECTIONS)  # type: ignore[attr-defined]
            transport.close()
            listener.faults.log(
                logging.WARNING,
                "max-connections",
                "refused a connection: %d are open (--max-connections %d)",
                open_now,
                limit,
            )
            return
        self.transport = transport
        listener.by_transport[transport] = self
        self.inner.connection_made(transport)
        self._request_begins()

    def data_received(self, data: bytes) -> None:
        if self.transport is None:  # refused
            return
        if self.request_deadline is None:
            self._request_begins()
            self.next_waits = self.answering
        self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        if self.transport is None:
            return None
        return self.inner.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.transport is None:
            return
        self.listener.by_transport.pop(self.transport, None)
        self.header_deadline = self.request_deadline = None
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()

    def headers_in(self) -> None:
        """aiohttp has parsed a request's headers."""
        self.header_deadline = None

    def body_pending(self) -> None:
        """aiohttp has handed over a request whose body is still to come. If no clock runs (its bytes came in
        the same read as an earlier request's, so no read of its own started one), the body's starts now: a
        client that stops sending never holds a handler and a connection past the request timeout."""
        self.header_deadline = None
        if self.request_deadline is None:
            self.request_deadline = self.loop.time() + self.listener.limits.request_read_timeout
            if self.timer is None:
                self.timer = self.loop.call_at(self.request_deadline, self._check)

    def request_in(self) -> None:
        """A request is in whole and being answered; the next one's clocks start at its first byte."""
        self.header_deadline = self.request_deadline = None
        self.answering = True
        self.next_waits = False

    def answered(self) -> None:
        """A request's answer is handed to aiohttp to write."""
        self.answering = False
        if self.next_waits:
            self.next_waits = False
            self._request_begins()

    def _request_begins(self) -> None:
        now = self.loop.time()
        limits = self.listener.limits
        self.header_deadline = now + limits.header_read_timeout
        self.request_deadline = now + limits.request_read_timeout
        if self.timer is None:
            self.timer = self.loop.call_at(min(self.header_deadline, self.request_deadline), self._check)

    def _check(self) -> None:
        self.timer = None
        header, request = self.header_deadline, self.request_deadline
        if header is None and request is None:
            return
        now = self.loop.time()
        limits = self.listener.limits
        if self.next_waits:  # the next request's clocks have not started: check again later
            self.timer = self.loop.call_at(now + limits.header_read_timeout, self._check)
        elif header is not None and now >= header:
            self._timed_out("headers", "its request headers", limits.header_read_timeout)
        elif request is not None and now >= request:
            self._timed_out("request", "its request", limits.request_read_timeout)
        else:
            ahead = min(deadline for deadline in (header, request) if deadline is not None)
            self.timer = self.loop.call_at(ahead, self._check)

    def _timed_out(self, what: str, text: str, limit: float) -> None:
        self.listener.faults.log(
            logging.INFO, f"timeout-{what}", "closed a connection that did not send %s within %s s", text, limit
        )
        self.header_deadline = self.request_deadline = None
        if self.transport is not None:
            self.transport.close()
