"""The listener's limits, after Vault's (``ListenerLimits``): a connection's protocol wrapped around the
one aiohttp's ``web.Server`` makes, through asyncio's public protocol methods.

A request's headers must arrive within ``header_read_timeout`` of its first byte (of the connection, for
the first request), the whole request within ``request_read_timeout``; an idle keep-alive connection is
closed after ``idle_timeout`` (aiohttp's ``keepalive_timeout``). A timed-out connection is closed without an
answer, as Go's server does, and logged as one line (rate-limited).

The clocks are deadlines, not a timer per request: a request's first byte sets them (two floats), the edge
clears them when aiohttp hands it the request (headers in) and when its body is in, and one timer per
connection, armed only when a deadline is set and none runs, checks them when it fires (re-arming itself
for a deadline still ahead). A request that arrives whole in one read arms no timer of its own. Bytes of a
next request that come while one is answered (pipelining), or that came behind complete requests in one
read, start its clocks once the answer before it is handed over, since aiohttp hands the next request over
only then. Nothing public tells where aiohttp's parser stopped, so ``Framing`` follows the byte stream
itself: where each header block ends and how long its body is.

Slots: each connection is new (nothing read from it yet), partial (a request begun, its headers not all
in), busy (a request's headers in, not yet answered) or idle (kept alive between requests). At
``max_connections`` a new connection takes the slot of the oldest partial one, else of the one idle the
longest, else of the oldest new one, and is answered 503 only when every connection is busy; past
``max_connections_per_address`` from its address, the same choice among that address's own connections.
New ones go last because every client's connection is new until its first read: put first, a stream of
hostile connects would close honest ones before their request is read. Ordered dicts per scope (one per
state but busy) make every step O(1): a connection moves to the end of one when it changes state, and the
oldest is the first.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections import OrderedDict
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

# A connection's state, for the choice of which one gives up its slot.
PARTIAL = "partial"  # a request begun, its headers not all in: goes first
IDLE = "idle"  # kept alive between requests: goes oldest first, after every partial one
NEW = "new"  # nothing read from it yet: goes last
BUSY = "busy"  # a request's headers in, not yet answered: never evicted


@dataclass(frozen=True)
class ListenerLimits:
    """Seconds, and counts (0: no limit)."""

    header_read_timeout: float = DEFAULTS.header_read_timeout
    request_read_timeout: float = DEFAULTS.request_read_timeout
    idle_timeout: float = DEFAULTS.idle_timeout
    max_connections: int = DEFAULTS.max_connections
    max_connections_per_address: int = DEFAULTS.max_connections_per_address


class Slots:
    """Connections that may give up their slot, by state, oldest first; and how many are open."""

    __slots__ = ("by_state", "count")

    def __init__(self) -> None:
        # In the order they give up their slots (dicts keep their keys' order).
        self.by_state: dict[str, OrderedDict[Connection, None]] = {
            PARTIAL: OrderedDict(),
            IDLE: OrderedDict(),
            NEW: OrderedDict(),
        }
        self.count = 0  # open connections of this scope, busy ones included

    def victim(self) -> Connection | None:
        """The connection to close for a new one: the oldest partial, else the one idle the longest, else
        the oldest new one (None: all are busy)."""
        for ordered in self.by_state.values():
            if ordered:
                return next(iter(ordered))
        return None


class Listener:
    """The open connections of one listening server (one worker's: the kernel spreads a port's connections
    over the workers, each keeps its own counts), by transport (the edge finds a request's connection by its
    transport), what may be evicted, per client address too, and the rate-limited log."""

    def __init__(self, limits: ListenerLimits) -> None:
        self.limits = limits
        self.faults = RateLimitedLog(log)
        self.by_transport: dict[Any, Connection] = {}
        self.slots = Slots()
        self.by_address: dict[str, Slots] = {}

    def admit(self, transport: Any) -> tuple[bool, str | None]:
        """Make room for a new connection, closing one it takes the place of if need be: whether it may
        stay (not when every connection it could take the place of is busy), and its address (None: not
        counted per address)."""
        limits = self.limits
        per_address = limits.max_connections_per_address
        address = None
        if per_address:
            peername = transport.get_extra_info("peername")
            address = peername[0] if isinstance(peername, tuple) and peername else None
            if address is not None:
                peer = self.by_address.get(address)
                if peer is not None and peer.count >= per_address:
                    victim = peer.victim()
                    if victim is None:
                        self._refused("max-connections-per-address", peer.count, per_address)
                        return False, None
                    victim.evict("--max-connections-per-address", per_address)
        limit = limits.max_connections
        if limit and self.slots.count >= limit:
            victim = self.slots.victim()
            if victim is None:
                self._refused("max-connections", self.slots.count, limit)
                return False, None
            victim.evict("--max-connections", limit)
        return True, address

    def _refused(self, kind: str, open_now: int, limit: int) -> None:
        self.faults.log(
            logging.WARNING,
            kind,
            "refused a connection: %d are open and busy (--%s %d)",
            open_now,
            kind,
            limit,
        )


class Framing:
    """Where a connection's byte stream stands: inside a header block (``head``: its bytes so far), in a
    body (``body_left`` bytes to come), or between requests. A chunked body ends the following (``lost``):
    its requests then get the clocks the pipelining rule gives them."""

    __slots__ = ("head", "body_left", "lost", "heads")

    _TRANSFER_ENCODING = re.compile(rb"\r\ntransfer-encoding[ \t]*:", re.IGNORECASE)
    _CONTENT_LENGTH = re.compile(rb"\r\ncontent-length[ \t]*:[ \t]*(\d+)", re.IGNORECASE)
    # aiohttp refuses a longer header block; following one this long is no use.
    _MAX_HEAD = 128 * 1024

    def __init__(self) -> None:
        self.head = bytearray()
        self.body_left = 0
        self.lost = False
        self.heads = 0  # header blocks seen whole

    def mid_headers(self) -> bool:
        """A request has begun whose headers are not all in."""
        return bool(self.head) and not self.lost

    def feed(self, data: bytes) -> None:
        if self.lost:
            return
        pos, size = 0, len(data)
        while pos < size:
            if self.body_left:
                taken = min(self.body_left, size - pos)
                self.body_left -= taken
                pos += taken
                continue
            if not self.head:
                while data.startswith(b"\r\n", pos):  # blank lines between requests are allowed
                    pos += 2
                if pos >= size:
                    return
            end = self._head_end(data, pos)
            if end < 0:
                self.head += data[pos:]
                if len(self.head) > self._MAX_HEAD:
                    self.lost = True
                    self.head.clear()
                return
            if self.head:
                block, start, stop = bytes(self.head) + data[pos:end], 0, None
                self.head.clear()
            else:  # the usual case: searched in place
                block, start, stop = data, pos, end
            self.heads += 1
            pos = end
            # The regular expressions only where a plain search finds the word (in either usual case).
            if (block.find(b"ransfer", start, stop) >= 0 or block.find(b"RANSFER", start, stop) >= 0) and (
                self._TRANSFER_ENCODING.search(block, start, stop or len(block))
            ):
                self.lost = True
                return
            length = (block.find(b"ength", start, stop) >= 0 or block.find(b"ENGTH", start, stop) >= 0) and (
                self._CONTENT_LENGTH.search(block, start, stop or len(block))
            )
            self.body_left = int(length.group(1)) if length else 0

    def _head_end(self, data: bytes, pos: int) -> int:
        """The index in ``data`` just past the header block's blank line, or -1."""
        if self.head:
            kept = min(3, len(self.head))
            seam = bytes(self.head[-kept:]) + data[pos : pos + 3]
            found = seam.find(b"\r\n\r\n")
            if found >= 0:
                return pos + found + 4 - kept
        found = data.find(b"\r\n\r\n", pos)
        return found + 4 if found >= 0 else -1


class Connection(asyncio.Protocol):
    """One connection: aiohttp's protocol for it, within the limits."""

    __slots__ = (
        "inner",
        "listener",
        "loop",
        "transport",
        "address",
        "state",
        "framing",
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
        self.address: str | None = None  # counted per address under this one (None: not)
        self.state: str | None = None  # PARTIAL, BUSY or IDLE while it holds a slot
        self.framing = Framing()
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
        admitted, address = listener.admit(transport)
        if not admitted:
            transport.write(TOO_MANY_CONNECTIONS)  # type: ignore[attr-defined]
            transport.close()
            return
        self.transport = transport
        self.address = address
        listener.by_transport[transport] = self
        listener.slots.count += 1
        if address is not None:
            peer = listener.by_address.get(address)
            if peer is None:  # its first open connection (or its last was closed for this one)
                peer = listener.by_address[address] = Slots()
            peer.count += 1
        self.state = BUSY  # in no order yet
        self._become(NEW)
        self.inner.connection_made(transport)
        self._request_begins()

    def data_received(self, data: bytes) -> None:
        state = self.state
        if state is None:  # refused, or closed to admit another
            return
        framing = self.framing
        heads = framing.heads
        framing.feed(data)
        if self.request_deadline is None:
            self._request_begins()
            self.next_waits = self.answering
        if state is not BUSY:
            # A request's headers came whole, with nothing begun behind them: aiohttp hands it over next.
            whole = framing.heads > heads and not framing.mid_headers() and not framing.lost
            self._become(BUSY if whole else PARTIAL)
        self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        if self.transport is None:
            return None
        return self.inner.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.transport is None:
            return
        self._release()
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
        self._become(BUSY)
        if self.request_deadline is None:
            self.request_deadline = self.loop.time() + self.listener.limits.request_read_timeout
            if self.timer is None:
                self.timer = self.loop.call_at(self.request_deadline, self._check)

    def request_in(self) -> None:
        """A request is in whole and being answered; the next one's clocks start at its first byte."""
        self.header_deadline = self.request_deadline = None
        self.answering = True
        self.next_waits = False
        self._become(BUSY)

    def answered(self) -> None:
        """A request's answer is handed to aiohttp to write. A next request begun meanwhile, or behind this
        one in the read that brought it, gets its clocks now; else the connection is idle."""
        self.answering = False
        if self.state is None:  # closed meanwhile (its request timed out)
            return
        if self.next_waits or self.framing.mid_headers():
            self.next_waits = False
            self._request_begins()
            self._become(PARTIAL)
        else:
            self._become(IDLE)

    def evict(self, flag: str, limit: int) -> None:
        """Give up this connection's slot to a new one: closed without an answer (an idle one between
        requests, as its idle timeout would)."""
        self.listener.faults.log(
            logging.INFO,
            f"evicted-{self.state}",
            "closed %s connection to admit a new one (%s %d)",
            {IDLE: "an idle", NEW: "a new"}.get(self.state, "a header-incomplete"),
            flag,
            limit,
        )
        self._release()
        self.transport.close()

    def _become(self, state: str) -> None:
        """Move to ``state``: at the end of its order (the newest), or out of every order (busy)."""
        old = self.state
        if old is state or old is None:  # unchanged, or no longer holding a slot
            return
        scopes = [self.listener.slots]
        if self.address is not None:
            scopes.append(self.listener.by_address[self.address])
        for slots in scopes:
            if old is not BUSY:
                del slots.by_state[old][self]
            if state is not BUSY:
                slots.by_state[state][self] = None
        self.state = state

    def _release(self) -> None:
        """Give up the slot (once): out of every count and order, no clock."""
        if self.state is None:
            return
        listener = self.listener
        self._become(BUSY)  # out of every order
        self.state = None
        listener.by_transport.pop(self.transport, None)
        listener.slots.count -= 1
        if self.address is not None:
            peer = listener.by_address[self.address]
            peer.count -= 1
            if not peer.count:
                del listener.by_address[self.address]
        self.header_deadline = self.request_deadline = None
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

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
        self._release()
        if self.transport is not None:
            self.transport.close()
