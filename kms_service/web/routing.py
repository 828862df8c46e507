"""One table of routes and a dispatcher that authenticates, authorises (path ACL), then calls a handler.

Paths are matched on the raw request path, segment by segment, so ``%2F`` or ``..`` can never turn into
another key's path. Vault's order applies: no valid token → 403; path not granted → 403; unknown path →
404; known path, wrong method → 405.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

from aiohttp import web

from kms_service.acl import Capability
from kms_service.errors import (
    InvalidRequest,
    NotFound,
    PayloadTooLarge,
    PermissionDenied,
    UnsupportedOperation,
    UnsupportedPath,
)
from kms_service.keyring import validate_key_name
from kms_service.service import KMS, Principal
from kms_service.tokens import token_from_headers
from kms_service.web.fields import Fields, parse_body
from kms_service.web.replies import Reply

KMS_KEY = web.AppKey("kms", KMS)

# Request method → the capability it needs (writes are always "update": keys are never upserted).
CAPABILITY_FOR_METHOD = {
    "GET": Capability.READ,
    "HEAD": Capability.READ,
    "POST": Capability.UPDATE,
    "PUT": Capability.UPDATE,
    "DELETE": Capability.DELETE,
    "LIST": Capability.LIST,
    "PATCH": Capability.PATCH,
}


@dataclass
class Call:
    """What a handler gets: the service, the caller, path parameters and (lazily) the body fields."""

    request: web.Request
    kms: KMS
    params: dict[str, str]
    principal: Principal | None
    _fields: Fields | None = field(default=None, repr=False)

    async def fields(self) -> Fields:
        if self._fields is None:
            try:
                raw = await self.request.read()
            except web.HTTPRequestEntityTooLarge:
                raise PayloadTooLarge() from None
            self._fields = Fields(parse_body(raw), self.params)
        return self._fields

    def warnings(self) -> list[str]:
        return self._fields.warnings() if self._fields else []


Handler = Callable[[Call], Awaitable[Reply]]


@dataclass(frozen=True)
class Route:
    pattern: tuple[str, ...]
    methods: dict[str, Handler]
    authenticated: bool = True
    check_acl: bool = True

    def match(self, segments: list[str]) -> dict[str, str] | None:
        if len(segments) != len(self.pattern):
            return None
        params: dict[str, Any] = {}
        for expected, segment in zip(self.pattern, segments, strict=True):
            if expected.startswith(":"):
                params[expected[1:]] = segment
            elif expected != segment:
                return None
        return params


class Router:
    def __init__(self) -> None:
        self._routes: list[Route] = []

    def add(self, path: str, authenticated: bool = True, check_acl: bool = True, **methods: Handler) -> None:
        """``path`` like ``transit/keys/:name/rotate``; methods as GET=, POST= (PUT is POST), LIST=."""
        if "POST" in methods:
            methods["PUT"] = methods["POST"]
        self._routes.append(Route(tuple(path.split("/")), methods, authenticated, check_acl))

    def find(self, segments: list[str]) -> tuple[Route, dict[str, str]] | None:
        for route in self._routes:
            params = route.match(segments)
            if params is not None:
                return route, params
        return None

    async def dispatch(self, request: web.Request) -> tuple[Reply, Call | None]:
        method = request.method.upper()
        if method == "GET" and request.query.get("list") == "true":
            method = "LIST"
        segments = _split_path(request.raw_path, trailing_slash_ok=method == "LIST")
        if segments is None:
            raise NotFound()
        found = self.find(segments)
        route, params = found if found else (None, {})
        principal = None
        if route is None or route.authenticated:
            principal = await request.app[KMS_KEY].tokens.authenticate(token_from_headers(request.headers))
            if principal is None:
                raise PermissionDenied()
            if route is None or route.check_acl:
                capability = CAPABILITY_FOR_METHOD.get(method)
                if capability is None or not principal.acl.allows("/".join(segments), capability):
                    raise PermissionDenied()
        if route is None:
            raise UnsupportedPath()
        handler = route.methods.get(method)
        if handler is None:
            raise UnsupportedOperation()
        if "name" in params:
            validate_key_name(params["name"])
        call = Call(request, request.app[KMS_KEY], params, principal)
        return await handler(call), call


def _split_path(raw_path: str, trailing_slash_ok: bool) -> list[str] | None:
    """Segments after ``/v1/``, percent-decoded one by one; None if not an API path."""
    path = raw_path.split("?", 1)[0]
    if not path.startswith("/v1/"):
        return None
    rest = path[len("/v1/") :]
    if trailing_slash_ok and rest.endswith("/"):
        rest = rest[:-1]
    segments = []
    for raw in rest.split("/"):
        try:
            segment = unquote(raw, errors="strict")
        except UnicodeDecodeError:
            raise InvalidRequest("invalid path: bad percent-encoding") from None
        if segment in ("", ".", "..") or "/" in segment or any(ord(c) < 0x20 or ord(c) == 0x7F for c in segment):
            raise InvalidRequest("invalid path: empty, relative or control-character segment")
        segments.append(segment)
    return segments
