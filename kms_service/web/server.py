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

``AppRunner`` is aiohttp's with this protocol; ``kms-service serve`` and the tests' server use it.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web, web_protocol, web_server
from aiohttp.http_exceptions import BadHttpMethod
from aiohttp.http_parser import HttpRequestParserPy

LIST_REQUEST = b"LIST "


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


class _Protocol(web_protocol.RequestHandler):
    __slots__ = ()

    def __init__(self, manager: web_server.Server, *, loop: asyncio.AbstractEventLoop, **kwargs: Any) -> None:
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


class _Server(web_server.Server):
    def __call__(self) -> web_protocol.RequestHandler:
        return _Protocol(self, loop=self._loop, **self._kwargs)


class AppRunner(web.AppRunner):
    """``web.AppRunner`` whose connections accept ``LIST``."""

    async def _make_server(self) -> web_server.Server:
        server = await super()._make_server()
        return _Server(
            server.request_handler,
            request_factory=server.request_factory,
            handler_cancellation=server.handler_cancellation,
            loop=server._loop,
            **server._kwargs,
        )
