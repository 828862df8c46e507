"""The direct lane: a request that arrived whole on a kept-alive HTTP/1.1 connection is answered without
aiohttp's per-request objects.

aiohttp's request path (a waiter woken per request, a second task, ``web.Request``, the application's
handler chain, ``web.Response``, ``StreamResponse.prepare`` and its header writer) costs about 190 k
instructions per request here (callgrind: the bare aiohttp handler's 271 k less a bare asyncio protocol's
83 k, README). On the direct lane the connection's protocol (``server.py``) hands the parsed message to the
app's handler in a ``DirectRequest``, which has the few parts of ``web.Request`` the service reads, and
writes the ``replies.Answer`` it returns as one buffer.

The lane changes nothing a client can see: the same handler answers, and the bytes written are those
aiohttp writes for the same answer (status line, the answer's headers, Content-Length, Date, Server;
``tests/test_direct_lane.py`` compares the two lanes). Everything else (a body still arriving, HEAD,
HTTP/1.0, ``Connection: close``, an ``Expect`` header, an upgrade, a compressed body, a parse error, and
what is queued behind any of them) stays on aiohttp's path.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from http import HTTPStatus
from typing import Any

from aiohttp import web
from aiohttp.helpers import rfc822_formatted_time
from aiohttp.http import SERVER_SOFTWARE, HttpVersion11, RawRequestMessage
from aiohttp.streams import StreamReader
from multidict import CIMultiDictProxy, MultiDictProxy

from kms_service.web.replies import Answer

_NO_BODY_STATUSES = frozenset({204, 304})
_SERVER_HEADER = f"Server: {SERVER_SOFTWARE}\r\n\r\n"
# Header names the writer sets itself.
_OWN_HEADERS = frozenset({"Content-Length", "Transfer-Encoding", "Date", "Server", "Connection"})
# The reason phrases aiohttp writes (http.HTTPStatus's; none for a code it does not know).
_REASONS = {status.value: status.phrase for status in HTTPStatus}


def eligible(message: Any, payload: StreamReader) -> bool:
    """Whether a parsed request can be answered on the direct lane: complete, kept alive, plain."""
    return (
        type(message) is RawRequestMessage  # not aiohttp's parse-error record
        and payload.is_eof()
        and not message.should_close
        and message.version == HttpVersion11
        and not message.upgrade
        and message.compression is None
        and message.method != "HEAD"
        and "Expect" not in message.headers  # 100-continue and 417 are aiohttp's (its expect handler)
    )


def received_body(payload: Any) -> bytes:
    """The bytes a body's reader holds and nobody has read yet (none for aiohttp's EmptyStreamReader)."""
    chunks = getattr(payload, "_buffer", ())
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


class _ReceivedBody:
    """A body already received whole, read as ``read_body`` reads aiohttp's ``StreamReader``. Reading it
    does not wake the connection's parser, as reading aiohttp's does (a feed of no bytes after each read)."""

    __slots__ = ("_data",)

    def __init__(self, payload: StreamReader) -> None:
        self._data: bytes | None = received_body(payload)  # complete: eligible() checked is_eof

    def is_eof(self) -> bool:
        return True

    def read_nowait(self, n: int = -1) -> bytes:
        data, self._data = self._data or b"", b""
        return data

    async def iter_any(self) -> AsyncIterator[bytes]:
        data = self.read_nowait()
        if data:
            yield data


class DirectRequest:
    """The parts of ``aiohttp.web.Request`` the service reads, over a parsed message whose body is in."""

    __slots__ = ("app", "content", "content_length", "_message", "_transport", "_state")

    def __init__(self, app: web.Application, message: RawRequestMessage, payload: StreamReader, transport: Any):
        self.app = app
        self.content = _ReceivedBody(payload)
        self._message = message
        self._transport = transport
        self._state: dict[Any, Any] = {}
        # Read several times per request; the parser accepted the value as a number (aiohttp's does too).
        length = message.headers.get("Content-Length")
        self.content_length: int | None = None if length is None else int(length)

    @property
    def method(self) -> str:
        return self._message.method

    @property
    def headers(self) -> CIMultiDictProxy[str]:
        return self._message.headers

    @property
    def raw_path(self) -> str:
        return self._message.path

    @property
    def path(self) -> str:
        return self._message.url.path

    @property
    def query(self) -> MultiDictProxy[str]:
        return self._message.url.query

    @property
    def remote(self) -> str | None:
        peer = self._transport.get_extra_info("peername") if self._transport is not None else None
        if isinstance(peer, (list, tuple)):
            return str(peer[0])
        return None if peer is None else str(peer)

    def __getitem__(self, key: Any) -> Any:
        return self._state[key]

    def __setitem__(self, key: Any, value: Any) -> None:
        self._state[key] = value

    def __contains__(self, key: Any) -> bool:
        return key in self._state

    def get(self, key: Any, default: Any = None) -> Any:
        return self._state.get(key, default)


def serialize(answer: Answer) -> bytes:
    """``answer`` as the bytes aiohttp writes for it as a ``web.Response`` on a kept-alive HTTP/1.1
    connection: the status line, its headers in order, Content-Length (none for 204 and 304), Date, Server."""
    status = answer.status
    head = [f"HTTP/1.1 {status} {_REASONS.get(status, '')}\r\n"]
    for name, value in answer.headers.items():
        if "\r" in value or "\n" in value or name in _OWN_HEADERS:
            raise ValueError(f"header {name!r} is not for a handler to set")  # aiohttp refuses these too
        head.append(f"{name}: {value}\r\n")
    if status in _NO_BODY_STATUSES or status < 200:
        body = b""
    else:
        body = answer.body or b""
        head.append(f"Content-Length: {len(body)}\r\n")
    head.append(f"Date: {rfc822_formatted_time()}\r\n")
    head.append(_SERVER_HEADER)
    return "".join(head).encode("latin-1") + body
