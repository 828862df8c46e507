"""The router: finds a request's path in the table, authenticates, authorises (path ACL), then runs it.

Paths are matched on the raw request path, segment by segment, so ``%2F`` or ``..`` can never turn into
another key's path. The request's namespace (``X-Vault-Namespace`` and the path's leading namespace
segments, joined) is taken off the path first; the rest is routed within it, and the ACL sees the path
relative to the token's own namespace, which must be the request's or above it. Lookup walks a trie of
segments: a literal segment beats a parameter, so
``transit/keys/:name/rotate`` and ``transit/keys/:name`` never collide. Vault's order applies: no valid
token → 403; path not granted → 403; unknown path → 404; known path, wrong method → 405.

A list is the ``LIST`` method or a GET with ``?list=`` true (Go's ``strconv.ParseBool``: 1, t, T, TRUE,
true, True; 0, f, F, FALSE, false, False or empty is a plain GET; anything else is a 400 with no message,
before authentication, as in Vault). Vault lists ``<path>/``: one trailing slash is accepted, the ACL is asked
about ``<path>/`` (an exact rule for ``<path>`` first, see ``acl.ACL``), and only a path that lists matches it
(Vault's ``/?$`` patterns), or one whose optional last parameter was given (Vault's ``(/(?P<x>.+))?`` takes
the slash into the parameter): listing any other known path is an unknown path, 404, not 405.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

from kms_service.acl import Capability, wrapping_allowed
from kms_service.errors import (
    InvalidRequest,
    NotFound,
    PermissionDenied,
    UnsupportedOperation,
    UnsupportedPath,
)
from kms_service.mounts import DEFAULT_MOUNT
from kms_service.tokens import token_from_headers, wrap_ttl_from_headers
from kms_service.web import openapi
from kms_service.web.body import PARSE_INLINE_BYTES, HeavyLane, RequestLimits
from kms_service.web.execution import run
from kms_service.web.fields import parse_go_bool
from kms_service.web.framework import CAPABILITY_FOR_METHOD, Call, Operation, Path
from kms_service.web.incoming import IncomingRequest
from kms_service.web.replies import Reply

KMS_KEY = "kms"  # the app's KMS
CALL_KEY = "kms_call"  # a request's routed Call


# The most segments a ``*param`` takes (mount paths have at most four).
MAX_GLOB_SEGMENTS = 8
# The most lookups Router.find (and the path splits) remember (then they start again), and the longest path
# they keep: at most ~10 MB for each, however a caller picks its paths.
MAX_FOUND_ROUTES = 10_000
MAX_REMEMBERED_PATH = 512
_UNSEEN = object()
# The first segments no mount can take: the router looks these up as they are.
SYSTEM_PREFIXES = frozenset({"sys", "auth"})


@dataclass
class _Node:
    literals: dict[str, _Node] = field(default_factory=dict)
    param: str | None = None
    param_node: _Node | None = None
    glob: str | None = None
    glob_node: _Node | None = None
    path: Path | None = None


class Router:
    def __init__(self, paths: Iterable[Path] = (), limits: RequestLimits | None = None) -> None:
        self._root = _Node()
        self._paths: list[Path] = []
        self._depth = 0
        self.limits = limits or RequestLimits()
        # Segments → what find answered: the table never changes once built (add() empties it anyway).
        self._found: dict[tuple[str, ...], tuple[Path, dict[str, str]] | None] = {}
        # (raw path, listing) → its segments and the path the ACL sees (``_split_path`` decodes and checks
        # each segment: the same answer every time).
        self._split: dict[tuple[str, bool], tuple[tuple[str, ...], str]] = {}
        # Large bodies are parsed one at a time (body.read_fields).
        self.heavy_lane = HeavyLane()
        # Called with each request about to run its handler (execution.run): the audit log's request record.
        self.on_request: Callable[[Call], Awaitable[None]] | None = None
        for path in paths:
            self.add(path)

    @property
    def paths(self) -> tuple[Path, ...]:
        return tuple(self._paths)

    def add(self, path: Path) -> None:
        for pattern in path.patterns:
            node = self._root
            for segment in pattern:
                if segment.startswith("*"):
                    if node.glob not in (None, segment[1:]):
                        raise ValueError(f"{path.pattern}: '*{node.glob}' and '{segment}' at the same place")
                    node.glob = segment[1:]
                    node.glob_node = node.glob_node or _Node()
                    node = node.glob_node
                elif segment.startswith(":"):
                    if node.param not in (None, segment[1:]):
                        raise ValueError(f"{path.pattern}: ':{node.param}' and '{segment}' at the same place")
                    node.param = segment[1:]
                    node.param_node = node.param_node or _Node()
                    node = node.param_node
                else:
                    node = node.literals.setdefault(segment, _Node())
            if node.path is not None:
                raise ValueError(f"{path.pattern}: '{'/'.join(pattern)}' is already {node.path.pattern}")
            node.path = path
            globs = sum(segment.startswith("*") for segment in pattern)
            self._depth = max(self._depth, len(pattern) + globs * (MAX_GLOB_SEGMENTS - 1))
        self._paths.append(path)
        self._found.clear()

    def find(self, segments: Sequence[str]) -> tuple[Path, dict[str, str]] | None:
        if len(segments) > self._depth:
            return None
        key = tuple(segments)
        found = self._found.get(key, _UNSEEN)
        if found is _UNSEEN:
            found = _match(self._root, segments, 0, {})
            _remember(self._found, key, found, sum(map(len, segments)))
        return None if found is None else (found[0], dict(found[1]))  # a copy: a Call's params are its own

    async def dispatch(self, request: IncomingRequest) -> tuple[Reply, Call | None]:
        if (request.content_length or 0) <= PARSE_INLINE_BYTES:  # not a large body: the heavy lane yields to it
            self.heavy_lane.light_requests += 1
        method = request.method.upper()
        # Read before the token, as Vault does: a bad X-Vault-Wrap-TTL is a 400 whoever asks.
        wrap_ttl = wrap_ttl_from_headers(request.headers)
        if method == "GET" and _list_query(request):
            method = "LIST"
        listing = method == "LIST"
        raw_path = request.raw_path.partition("?")[0]
        split = self._split.get((raw_path, listing))
        if split is None:
            found_segments = _split_path(raw_path, trailing_slash_ok=listing)  # a bad path raises: not kept
            if found_segments is None:
                raise NotFound()
            split = (tuple(found_segments), "/".join(found_segments) + ("/" if listing else ""))
            _remember(self._split, (raw_path, listing), split, len(raw_path))
        segments, acl_path = split
        kms = request.app[KMS_KEY]
        namespace, segments = await kms.mounts.resolve_namespace(request.headers.get(NAMESPACE_HEADER), segments)
        # A path in a transit mount (``transit/...``, ``payments/...``) is looked up as transit's: the
        # table's transit paths serve every mount, each with its own keys. The ACL sees the path as sent.
        mount, route = None, segments
        if segments and segments[0] not in SYSTEM_PREFIXES:
            resolved = await kms.mounts.resolve(segments, namespace)
            if resolved is not None:
                mount, rest = resolved
                route = [DEFAULT_MOUNT, *rest]
            elif segments[0] == DEFAULT_MOUNT:
                route = ()  # a namespace has no transit/ until it mounts one: an unknown path, not the table's
        found = self.find(route) if route else None
        path, params = found if found else (None, {})
        if listing and path is not None and not _lists_at(path, params):
            path, params = None, {}
        operation = path.operations.get("POST" if method == "PUT" else method) if path else None
        call = Call(
            request, kms, self, params, mount=mount, path=path, operation=operation, method=method, namespace=namespace
        )
        call.acl_path, call.wrap_ttl = acl_path, wrap_ttl
        request[CALL_KEY] = call  # for the metrics and the access log, whatever happens next
        if path is not None and _help_query(request):
            # ``bao path-help``: the table's own description, for any valid token (it is the public OpenAPI
            # document's part for this path).
            call.principal = await call.kms.tokens.authenticate(token_from_headers(request.headers))
            if call.principal is None:
                raise PermissionDenied()
            return Reply(openapi.path_help(path, acl_path), bare=True), call
        if path is None or path.authenticated:
            call.principal = await call.kms.tokens.authenticate(token_from_headers(request.headers))
            if call.principal is None:
                raise PermissionDenied()
            if namespace or call.principal.info.namespace:
                acl_path = _acl_path(call.principal.info.namespace, namespace, segments, listing)
                if path is not None and path.acl_in_token_namespace:
                    acl_path = "/".join(segments)
        checks_acl = call.principal is not None and (path is None or path.check_acl)
        params_checked = False
        if path is not None and operation is not None and operation.existence is not None:
            path.check_params(params)  # never ask storage about a malformed name
            params_checked = True
            # The existence check (Vault's: create or update?) asks storage; a token allowed neither is refused
            # either way, so it is refused before that (no query for tokens without a grant there).
            if checks_acl and not any(call.principal.acl.allows(acl_path, c) for c in EXISTENCE_CAPABILITIES):
                raise PermissionDenied()
            call.existed = await operation.existence(call)
        call.policy_path = acl_path
        if checks_acl:
            capability = _capability(method, operation, call.existed)
            if capability is None or not call.principal.acl.allows(acl_path, capability):
                raise PermissionDenied()
            # A rule's min_wrapping_ttl / max_wrapping_ttl: the answer must be asked for wrapped, within them.
            acl = call.principal.acl
            if acl.limits_wrapping and not wrapping_allowed(acl.wrapping_limits(acl_path), wrap_ttl):
                raise PermissionDenied()
        # A token with limited uses spends one on each request it may make (at 0 it is gone).
        if call.principal is not None and not await call.kms.tokens.use(call.principal):
            raise PermissionDenied()
        if path is None:
            raise UnsupportedPath()
        if operation is None:
            raise UnsupportedOperation()
        if not params_checked:
            path.check_params(params)
        return await run(path, operation, call, self.limits), call


NAMESPACE_HEADER = "X-Vault-Namespace"


def _acl_path(token_namespace: str, namespace: str, segments: Sequence[str], listing: bool) -> str:
    """The path the token's policies are asked about: relative to the token's namespace (a root-namespace
    policy on ``ns1/transit/*`` reaches ns1's transit, as in Vault). A token never reaches a namespace
    outside its own (a sibling's, a parent's): 403."""
    if not namespace.startswith(token_namespace):
        raise PermissionDenied()
    return namespace[len(token_namespace) :] + "/".join(segments) + ("/" if listing else "")


def _remember(cache: dict[Any, Any], key: Any, value: Any, path_length: int) -> None:
    """Keep ``value`` for a path of ``path_length`` characters: paths are the caller's to choose, so only short
    ones are kept, and at most MAX_FOUND_ROUTES of them (then the cache starts again)."""
    if path_length <= MAX_REMEMBERED_PATH:
        if len(cache) >= MAX_FOUND_ROUTES:
            cache.clear()
        cache[key] = value


def _help_query(request: IncomingRequest) -> bool:
    """Whether the request asks for the path's help (Vault's ``?help=1``)."""
    return request.query.get("help", "") not in ("", "0", "false")


def _list_query(request: IncomingRequest) -> bool:
    """Whether a GET's ``?list=`` asks for a list (its first value, as Go's ``Query().Get``)."""
    value = request.query.get("list", "")
    if value == "":
        return False
    try:
        return parse_go_bool(value)
    except ValueError:
        raise InvalidRequest("") from None  # Vault: 400 with an empty error list


def _lists_at(path: Path, params: dict[str, str]) -> bool:
    """Whether Vault's pattern for ``path`` matches the listed ``<path>/``: a path that lists, or one whose
    optional last parameter was given (and takes the slash)."""
    return "LIST" in path.operations or (len(path.patterns) == 2 and len(params) == len(path.params))


ROUTER_KEY = "router"  # the app's Router

# What an existence check decides between.
EXISTENCE_CAPABILITIES = (Capability.CREATE, Capability.UPDATE)


def _capability(method: str, operation: Operation | None, existed: bool | None) -> Capability | None:
    """The capability this request needs. After an existence check, a POST is a create (the target does
    not exist) or an update (it does), as in Vault."""
    if operation is None:
        return CAPABILITY_FOR_METHOD.get(method)
    if existed is not None:
        return Capability.UPDATE if existed else Capability.CREATE
    return operation.capability


def _match(node: _Node, segments: list[str], i: int, params: dict[str, str]) -> tuple[Path, dict[str, str]] | None:
    """Depth-first, literal before parameter (recursion depth is bounded by the longest pattern)."""
    if i == len(segments):
        return (node.path, params) if node.path is not None else None
    child = node.literals.get(segments[i])
    if child is not None and (found := _match(child, segments, i + 1, params)):
        return found
    if node.param_node is not None and node.param is not None:
        if found := _match(node.param_node, segments, i + 1, {**params, node.param: segments[i]}):
            return found
    if node.glob_node is not None and node.glob is not None:
        # Shortest first, as Vault's ``(?P<path>.+?)``: ``sys/mounts/a/b/tune`` tunes ``a/b``.
        for end in range(i + 1, min(len(segments), i + MAX_GLOB_SEGMENTS) + 1):
            glob = {**params, node.glob: "/".join(segments[i:end])}
            if found := _match(node.glob_node, segments, end, glob):
                return found
    return None


_CONTROL = re.compile("[\x00-\x1f\x7f]")


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
        if segment in ("", ".", "..") or "/" in segment or _CONTROL.search(segment):
            raise InvalidRequest("invalid path: empty, relative or control-character segment")
        segments.append(segment)
    return segments
