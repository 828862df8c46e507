"""Declarative paths, after Vault's ``framework.Path``: a URL pattern, a field schema, operations by method.

Adding an endpoint is one handler plus one ``Path`` in its family's ``PATHS`` (``web/paths.py`` lists the
families: that is the one table). The router (``web/routing.py``) finds the path, checks the token and the
ACL; this module turns the body into typed values, calls the handler and answers batches; ``web/openapi.py``
documents the same table.

Handlers are thin. ``async def handler(call, args)`` gets the caller and path parameters in ``call`` and the
body's values in ``args`` (field name → value, parsed by field type, the default when absent), and returns
the response ``data`` (a dict), a ``Reply``, or None for 204.

An operation that takes ``batch_input`` (``Operation(batch=Batch(...))``) is written once, for one item:
``async def handler(call, args, items)`` loads what the request needs once (the key), then hands a function
of one item to ``items.respond``. Fields marked ``batch=True`` are item fields: without ``batch_input`` they
come from the top level and there is one item, whose user error is the request's error; with it, every item
of ``batch_input`` is one item, the top-level item fields are ignored, a user error becomes that item's
``error`` and the others go on, and any other error fails the whole request (Vault's batch semantics).
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import os
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from kms_service.acl import Capability
from kms_service.errors import InvalidRequest, PayloadTooLarge, UserError
from kms_service.web.fields import (
    DEFAULT_LIMITS,
    FieldTypeError,
    JsonLimits,
    ignored_field_warnings,
    is_form_type,
    parse_base64,
    parse_body,
    parse_boolean,
    parse_integer,
    parse_list,
    parse_map,
    parse_string,
    token_bound,
    too_many_tokens,
)
from kms_service.web.incoming import IncomingRequest
from kms_service.web.replies import Reply

if TYPE_CHECKING:
    from kms_service.keyring import Key
    from kms_service.mounts import Mount
    from kms_service.service import KMS, Principal
    from kms_service.service.keys import KeyService

T = TypeVar("T")

# The most items one request may carry in batch_input (each is parsed and answered in memory).
MAX_BATCH_ITEMS = 10_000

# Batches of at least this many items are answered in a worker thread (Items.respond); smaller ones on the
# event loop, where a thread's hand-off would cost more than it saves (100 items: about 2 ms).
OFFLOAD_ITEMS = 250

# Items answered off the event loop (slow operations, large bodies, large batches) run in these threads, not
# the default executor's: they never queue ahead of a key's first load or of the heavy lane (which has its
# own thread). ``cryptography`` releases the interpreter inside its calls, so they use every core.
CRYPTO_THREADS = ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 1), thread_name_prefix="kms-crypto")

# Bodies up to this size are parsed on the event loop (the values bound makes that at most ~1 ms); larger
# ones in a worker thread, so other requests go on meanwhile.
PARSE_INLINE_BYTES = 64 * 1024


@dataclass(frozen=True)
class RequestLimits:
    """How large a body may be (per path: single-item, or batch and backup) and what its JSON may hold."""

    max_body: int = 2 * 1024 * 1024
    max_large_body: int = 32 * 1024 * 1024
    json: JsonLimits = DEFAULT_LIMITS
    max_batch_items: int = MAX_BATCH_ITEMS


# After parsing a large body, wait this many times as long as the parse took, while other requests are
# being served (HeavyLane).
HEAVY_PAUSE = 5.0
# Other requests seen within this many seconds before a heavy job ends make it pause (HeavyLane).
LIGHT_WINDOW = 1.0


# Methods an operation may be declared for. PUT is POST (Vault: both are "update", or "create").
METHODS = ("GET", "HEAD", "POST", "DELETE", "LIST")

# The capability an operation needs unless it says otherwise (Vault's operation → capability map).
CAPABILITY_FOR_METHOD = {
    "GET": Capability.READ,
    "HEAD": Capability.READ,
    "POST": Capability.UPDATE,
    "PUT": Capability.UPDATE,
    "DELETE": Capability.DELETE,
    "LIST": Capability.LIST,
    "PATCH": Capability.PATCH,
}


class FieldType(enum.StrEnum):
    STRING = "string"
    BASE64 = "base64"  # a string of standard, padded base64; the value is the decoded bytes
    INT = "int"  # a JSON integer or a string of ASCII digits
    BOOL = "bool"  # true/false (or Vault's "true", "1", "f", ...)
    LIST = "list"
    MAP = "map"
    DURATION = "duration"  # seconds or a duration string ("1h"); passed to the handler as given
    VERSION = "version"  # a key version: a JSON integer, or a string (an integer, "v<integer>", "latest")


PARSERS: dict[FieldType, Callable[[str, Any], Any]] = {
    FieldType.STRING: parse_string,
    FieldType.BASE64: parse_base64,
    FieldType.INT: parse_integer,
    FieldType.BOOL: parse_boolean,
    FieldType.LIST: parse_list,
    FieldType.MAP: parse_map,
    FieldType.DURATION: lambda _name, value: value,
    FieldType.VERSION: lambda name, value: value if type(value) is int else parse_string(name, value),
}


@dataclass(frozen=True)
class Field:
    """One parameter: in the URL when the pattern names it (``:name``), otherwise in the JSON body."""

    name: str
    type: FieldType
    description: str
    default: Any = None
    # An item field: read from each batch_input item in batch mode, from the top level otherwise.
    batch: bool = False
    # A missing value (absent or null, or "" for a string) is a 400 with this text. In a batch item an absent
    # key fails the whole request (Vault's decode error) and a null or empty value fails that item.
    required: str | None = None
    # In a batch item only: an absent key fails that item with this text (Vault's sign "missing input").
    missing_item: str | None = None
    # Any value but null is refused with this text, whatever its type.
    refuse: str | None = None
    # Accepted and unused: the value is neither parsed nor checked (Vault's upsert-only parameters).
    ignored: bool = False
    # More validation of a present, parsed value; raises InvalidRequest.
    check: Callable[[Any], Any] | None = None
    deprecated: bool = False

    def __post_init__(self) -> None:
        # The type's parser, found once (an enum member's hash is a Python call, on every lookup).
        object.__setattr__(self, "_parser", PARSERS[self.type])

    @property
    def absent(self) -> Any:
        """What ``parse`` gives for an absent value of a field that is not required (no parsing needed)."""
        return None if self.refuse is not None or self.ignored else self.default

    def is_missing(self, raw: Any) -> bool:
        return raw is None or (self.type is FieldType.STRING and raw == "")

    def parse(self, raw: Any) -> Any:
        """The typed value of ``raw`` (None when absent). Raises InvalidRequest (FieldTypeError for a wrong
        type) with the project's texts."""
        if self.refuse is not None:
            if raw is not None:
                raise InvalidRequest(self.refuse)
            return None
        if self.ignored:
            return raw
        if self.required is not None and self.is_missing(raw):
            raise InvalidRequest(self.required)
        if raw is None:
            return self.default
        value = self._parser(self.name, raw)
        if self.check is not None:
            self.check(value)
        return value


@dataclass(frozen=True)
class Batch:
    """How an operation answers ``batch_input``."""

    # What an item that failed still carries besides "error" and "reference" (decrypt: plaintext "";
    # sign: key_version 0; verify: valid false), as Vault's result structs serialise.
    error_result: Mapping[str, Any] = field(default_factory=dict)
    # Vault's batchRequestResponse (encrypt, decrypt): 400 when an item failed, or the caller's
    # partial_failure_response_code when some succeeded. Otherwise (rewrap, sign, verify) always 200.
    status_from_items: bool = False
    # Request-wide rules over the raw items, run before they are parsed (e.g. context in all or none).
    check: Callable[[list[dict[str, Any]]], None] | None = None


Handler = Callable[..., Awaitable[Any]]
Existence = Callable[["Call"], Awaitable[bool]]


@dataclass(frozen=True)
class Operation:
    handler: Handler
    # The ACL capability it needs; by default the method's (GET read, POST update, DELETE delete, LIST list).
    capability: Capability | None = None
    # Vault's existence check, for POST: does the target exist? No → the request is a create and needs the
    # `create` capability; yes → an update, needing `update`. ``call.existed`` holds the answer.
    existence: Existence | None = None
    batch: Batch | None = None
    # Whether the JSON body is read and parsed (default: for POST only).
    body: bool | None = None
    # Whether the body may be as large as a batch's (--max-batch-request-size); default: when it takes
    # batch_input. Otherwise --max-request-size.
    large_body: bool | None = None
    # The fields of ``data`` in a successful answer (documentation: the OpenAPI document).
    returns: tuple[Field, ...] = ()
    # A bare answer is the JSON document itself, not Vault's envelope (sys/health, the OpenAPI document).
    bare: bool = False
    # The crypto operation it performs with the path's key (encrypt, sign, ...): each successful item is
    # counted in kms_crypto_operations_total by key type and operation.
    crypto: str | None = None
    # What a bare answer may be (sys/metrics: also Prometheus' text format).
    media_types: tuple[str, ...] = ("application/json",)


# A field whose absent value must go through Field.parse (it is required: absence is an error).
_NEEDS_PARSE = object()
_PATTERN_RE = re.compile(r"(?P<base>[^()]+?)(?:\(/:(?P<optional>[a-z_]+)\))?", re.ASCII)
_SEGMENT_RE = re.compile(r"[:*]?[a-z0-9_.-]+", re.ASCII)


@dataclass(frozen=True)
class Path:
    """``pattern`` is ``transit/keys/:name/rotate``: literal segments and ``:param`` segments, and at most
    one optional last parameter written ``(/:param)`` (``transit/sign/:name(/:hash)``). A ``*param``
    segment takes one or more segments, joined by ``/`` (``sys/mounts/*path``: mount paths hold slashes).
    Every parameter is also declared in ``fields``; the other fields are the body's."""

    pattern: str
    summary: str
    fields: tuple[Field, ...]
    operations: Mapping[str, Operation]
    description: str = ""
    authenticated: bool = True
    # False: any valid token may call it (auth/token/lookup-self).
    check_acl: bool = True

    # Derived from the above when the table is built (not arguments).
    patterns: tuple[tuple[str, ...], ...] = field(init=False, repr=False)  # one, or two with the optional param
    params: tuple[str, ...] = field(init=False, repr=False)
    param_fields: tuple[Field, ...] = field(init=False, repr=False)
    body_fields: tuple[Field, ...] = field(init=False, repr=False)
    body_names: frozenset[str] = field(init=False, repr=False)
    item_fields: tuple[Field, ...] = field(init=False, repr=False)  # a batch_input item's, with ``reference``
    # The body fields but batch_input, each with what an absent value gives without parsing (``_NEEDS_PARSE``
    # for a required field, whose absence is an error): most fields are absent from most requests.
    top_level_plan: tuple[tuple[Field, Any], ...] = field(init=False, repr=False)
    # ``item_fields`` with their names and absent values, for the loop over every item of a batch.
    item_plan: tuple[tuple[Field, str, Any], ...] = field(init=False, repr=False)
    # The same as an item with every field absent (copied for each item, then its present fields parsed),
    # each item field by name, and the names an item must hold for that shortcut (required, missing_item).
    item_absent: Mapping[str, Any] = field(init=False, repr=False)
    item_field_named: Mapping[str, Field] = field(init=False, repr=False)
    item_needed: frozenset[str] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        match = _PATTERN_RE.fullmatch(self.pattern)
        if match is None:
            raise ValueError(f"bad path pattern {self.pattern!r}")
        base = tuple(match["base"].split("/"))
        if not all(_SEGMENT_RE.fullmatch(segment) for segment in base):
            raise ValueError(f"bad path pattern {self.pattern!r}")
        patterns = (base,) if match["optional"] is None else (base, (*base, ":" + match["optional"]))
        object.__setattr__(self, "patterns", patterns)
        params = tuple(segment[1:] for segment in patterns[-1] if segment.startswith((":", "*")))
        object.__setattr__(self, "params", params)

        fields = list(self.fields)
        if any(op.batch for op in self.operations.values()):
            fields.append(BATCH_INPUT)
            if any(op.batch and op.batch.status_from_items for op in self.operations.values()):
                fields.append(PARTIAL_FAILURE_RESPONSE_CODE)
        names = [f.name for f in fields]
        if len(set(names)) != len(names):
            raise ValueError(f"{self.pattern}: a field is declared twice")
        if missing := set(params) - set(names):
            raise ValueError(f"{self.pattern}: path parameters without a field: {sorted(missing)}")
        object.__setattr__(self, "fields", tuple(fields))
        object.__setattr__(self, "param_fields", tuple(f for f in fields if f.name in params))
        body_fields = tuple(f for f in fields if f.name not in params)
        object.__setattr__(self, "body_fields", body_fields)
        object.__setattr__(self, "body_names", frozenset(f.name for f in body_fields))
        object.__setattr__(self, "item_fields", (*(f for f in body_fields if f.batch), REFERENCE))
        plan = tuple(
            (f, _NEEDS_PARSE if f.required is not None else f.absent) for f in body_fields if f is not BATCH_INPUT
        )
        object.__setattr__(self, "top_level_plan", plan)
        object.__setattr__(self, "item_plan", tuple((f, f.name, f.absent) for f in self.item_fields))
        object.__setattr__(self, "item_absent", {f.name: f.absent for f in self.item_fields})
        object.__setattr__(self, "item_field_named", {f.name: f for f in self.item_fields})
        needed = frozenset(f.name for f in self.item_fields if f.required is not None or f.missing_item is not None)
        object.__setattr__(self, "item_needed", needed)

        operations = {}
        for method, op in self.operations.items():
            if method not in METHODS:
                raise ValueError(f"{self.pattern}: unknown method {method} (PUT is POST)")
            if op.existence is not None and method != "POST":
                raise ValueError(f"{self.pattern}: an existence check is for POST (create or update)")
            default = CAPABILITY_FOR_METHOD[method]
            operations[method] = dataclasses.replace(
                op,
                capability=op.capability or default,
                body=method == "POST" if op.body is None else op.body,
                large_body=op.batch is not None if op.large_body is None else op.large_body,
            )
        object.__setattr__(self, "operations", operations)

    def check_params(self, params: Mapping[str, str]) -> None:
        for f in self.param_fields:
            if f.name in params:
                f.parse(params[f.name])


BATCH_INPUT = Field(
    "batch_input",
    FieldType.LIST,
    "Items to process in one request, each an object of this path's item fields and an optional 'reference'. "
    "When present (not null), the top-level item fields are ignored. Results come back in 'batch_results', in "
    f"input order, each with its 'reference' and, if that item failed, its 'error'. At most {MAX_BATCH_ITEMS} "
    "items.",
)
PARTIAL_FAILURE_RESPONSE_CODE = Field(
    "partial_failure_response_code",
    FieldType.INT,
    "The HTTP status to answer a batch in which some items failed and some succeeded, instead of 400 "
    "(200 to 599, except 204 and 304). When every item fails the status is 400 regardless.",
)
REFERENCE = Field(
    "reference",
    FieldType.STRING,
    "Any string; echoed in this item's result to correlate it with its input.",
    default="",
    batch=True,
)


class CallRouter(Protocol):
    """What a call sees of the router that dispatched it (``routing.Router``, which builds on this module):
    its table, the lane large bodies are parsed in, and the hook run before each handler."""

    heavy_lane: HeavyLane
    on_request: Callable[[Call], Awaitable[None]] | None

    @property
    def paths(self) -> tuple[Path, ...]: ...


@dataclass(slots=True)  # one per request: slots make it cheaper to build and read
class Call:
    """What a handler gets besides the body's values: the service, the caller and the path parameters."""

    request: IncomingRequest
    kms: KMS
    router: CallRouter
    params: dict[str, str]
    principal: Principal | None = None
    # The transit mount the request's path is in (None outside one: sys/, auth/).
    mount: Mount | None = None
    # The path the request matched (None: an unknown path) and its operation for the method (None there too,
    # and for a method the path does not take).
    path: Path | None = None
    operation: Operation | None = None
    # The answer of the operation's existence check, when it has one (False: this POST is a create).
    existed: bool | None = None
    # The key the existence check found (transit's key writes and encrypt), for the handler to reuse.
    found_key: Key | None = None
    # The type of the key a crypto operation used, and how many items it answered (metrics).
    key_type: str | None = None
    crypto_count: int = 0
    # The request's method as routed (a GET with ?list=true is LIST) and its data once read (the audit log).
    method: str = ""
    body: dict[str, Any] | None = None
    _warnings: list[str] = field(default_factory=list, repr=False)
    _keys: KeyService | None = field(default=None, repr=False)

    @property
    def keys(self) -> KeyService:
        """The keys and settings of the request's mount (looked up once per request)."""
        if self._keys is None:
            assert self.mount is not None, "a transit path is always in a mount"
            self._keys = self.kms.mounts.key_service(self.mount)
        return self._keys

    def warnings(self) -> list[str]:
        """Vault's warnings for body fields the path ignored or took from the URL instead, and the handler's."""
        return self._warnings

    def add_warning(self, text: str) -> None:
        self._warnings.append(text)


class Items:
    """The items of one request: the top-level one, or each of batch_input. An item is in play until it
    has a result or an error."""

    def __init__(
        self, values: list[dict[str, Any]], errors: list[str | None], batched: bool, large: bool = False
    ) -> None:
        self.values = values
        self.errors = errors
        self.results: list[dict[str, Any] | None] = [None] * len(values)
        self.batched = batched
        # The body was over PARSE_INLINE_BYTES: its payloads are answered in a worker thread (respond).
        self.large = large

    def __len__(self) -> int:
        return len(self.values)

    def map(self, fn: Callable[[dict[str, Any]], T]) -> list[T]:
        """``fn`` of each item in play, for those it succeeds on; an item it raises a user error for is out,
        with that error (without batch_input, the error is the request's)."""
        out = []
        for i in self._in_play():
            try:
                out.append(fn(self.values[i]))
            except UserError as exc:
                self._fail(i, exc)
        return out

    def field(self, name: str) -> list[Any]:
        """The field ``name`` of each item in play (``map`` of a plain lookup, which cannot fail)."""
        values = self.values
        return [values[i][name] for i in self._in_play()]

    async def respond(
        self,
        fn: Callable[[dict[str, Any]], dict[str, Any]],
        slow: bool = False,
        many: Callable[[list[dict[str, Any]]], list[dict[str, Any] | None]] | None = None,
    ) -> None:
        """``fn`` of each item in play is that item's result, a new dict each time (the batch reply adds
        the item's ``reference`` to it); a user error is that item's error. With more than one item in play,
        ``many`` first answers those it can all at once (one result, or None, per item; it raises no user
        error: an item it leaves is answered by ``fn``, with that item's error). In a worker thread when ``fn``
        is ``slow`` (the key type's ``slow_operations``), for a large body, and from ``OFFLOAD_ITEMS`` items
        on: ``cryptography``'s AEAD, signature and HMAC calls release the interpreter while they run, and
        the event loop gets it at least every switch interval (5 ms) otherwise, so other clients are
        answered meanwhile."""
        in_play = self._in_play()
        if slow or self.large or len(in_play) >= OFFLOAD_ITEMS:
            await asyncio.get_running_loop().run_in_executor(CRYPTO_THREADS, self._respond, fn, in_play, many)
        else:
            self._respond(fn, in_play, many)

    def _respond(
        self,
        fn: Callable[[dict[str, Any]], dict[str, Any]],
        in_play: list[int],
        many: Callable[[list[dict[str, Any]]], list[dict[str, Any] | None]] | None,
    ) -> None:
        values, results = self.values, self.results
        if many is not None and len(in_play) > 1:
            for i, result in zip(in_play, many([values[i] for i in in_play]), strict=True):
                results[i] = result
            in_play = [i for i in in_play if results[i] is None]
        for i in in_play:
            try:
                results[i] = fn(values[i])
            except UserError as exc:
                self._fail(i, exc)

    def _in_play(self) -> list[int]:
        errors, results = self.errors, self.results
        if len(errors) == 1:  # one item (no batch_input): the common case
            return [0] if errors[0] is None and results[0] is None else []
        return [i for i in range(len(errors)) if errors[i] is None and results[i] is None]

    def _fail(self, i: int, exc: UserError) -> None:
        if not self.batched:
            raise exc
        self.errors[i] = exc.message


async def read_body(request: IncomingRequest, limit: int, max_tokens: int | None = None) -> tuple[list[bytes], int]:
    """The body and an upper bound of its JSON values (``fields.token_bound``), counted chunk by chunk as
    it arrives. Refused (413) as soon as it is known to exceed ``limit``: by its Content-Length before a
    byte is read, or while reading; a JSON body with more than ``max_tokens`` values is refused (400) while
    reading too. A client that goes away meanwhile is ``ClientGone`` (from the body's reader)."""
    if request.content_length is not None and request.content_length > limit:
        raise PayloadTooLarge()
    form = is_form_type(request.headers.get("Content-Type"))
    ready = request.body.received()
    if ready is not None:
        # The whole body is in already (a small request arrives in one read): one chunk, no iteration.
        tokens = token_bound(ready)
        if len(ready) > limit:
            raise PayloadTooLarge()
        if max_tokens is not None and tokens > max_tokens and not form:
            raise InvalidRequest(too_many_tokens(max_tokens))
        return [ready], tokens
    chunks, size, tokens = [], 0, 1
    async for chunk in request.body.chunks():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge()
        tokens += token_bound(chunk) - 1
        if max_tokens is not None and tokens > max_tokens and not form:
            raise InvalidRequest(too_many_tokens(max_tokens))
        chunks.append(chunk)
    return chunks, tokens


def _parse_chunks(chunks: list[bytes], content_type: str | None, limits: JsonLimits, tokens: int) -> dict[str, Any]:
    return parse_body(b"".join(chunks), content_type, limits, tokens)


async def read_fields(
    request: IncomingRequest, limits: RequestLimits, large: bool, heavy_lane: HeavyLane
) -> tuple[dict[str, Any], bool]:
    """The body's fields, within ``limits``, and whether the body was over ``PARSE_INLINE_BYTES``: such a
    body is parsed in the ``HeavyLane``."""
    limit = limits.max_large_body if large else limits.max_body
    chunks, tokens = await read_body(request, limit, limits.json.tokens)
    content_type = request.headers.get("Content-Type")
    if sum(map(len, chunks)) <= PARSE_INLINE_BYTES:
        return _parse_chunks(chunks, content_type, limits.json, tokens), False
    return await heavy_lane.run(_parse_chunks, chunks, content_type, limits.json, tokens), True


# The heavy lane's one thread (HeavyLane.run holds its lock around each job, so nothing queues there).
_HEAVY_LANE_THREAD = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kms-heavy-lane")


class HeavyLane:
    """Work on large bodies (their parse, their audit record), in the lane's own thread, one job at a time.

    Python's JSON parser holds the interpreter for a whole parse, so a job holds up the event loop however
    it is run. While other requests are being served (one arrived since the previous job, or within
    ``LIGHT_WINDOW`` of when one was last seen), each job is followed by a pause ``HEAVY_PAUSE`` times as
    long as the job itself ran: large bodies, from any number of clients, get at most a sixth of the
    process's time and everyone else the rest. With nobody else to serve, there is no pause: large batches
    alone get the whole process."""

    def __init__(self) -> None:
        self._lock = asyncio.Lock()
        # Requests with a small body or none, counted as they arrive (Router.dispatch): an increment, no clock.
        self.light_requests = 0
        self._light_seen = 0
        self._contended_until = 0.0

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        async with self._lock:
            took = 0.0

            def timed() -> T:
                nonlocal took
                start = time.monotonic()
                try:
                    return fn(*args)
                finally:
                    took = time.monotonic() - start  # the job's own time, not its wait for the thread

            try:
                return await asyncio.get_running_loop().run_in_executor(_HEAVY_LANE_THREAD, timed)
            finally:
                await asyncio.sleep(0)  # a request that arrived during the job is counted before deciding
                if self._contended(time.monotonic()):
                    await asyncio.sleep(took * HEAVY_PAUSE)

    def _contended(self, now: float) -> bool:
        if self.light_requests != self._light_seen:
            self._light_seen = self.light_requests
            self._contended_until = now + LIGHT_WINDOW
        return now < self._contended_until


async def run(path: Path, operation: Operation, call: Call, limits: RequestLimits | None = None) -> Reply:
    """Parse the body against the path's fields, call the operation's handler, shape its answer."""
    limits = limits or RequestLimits()
    max_batch_items = limits.max_batch_items
    body: dict[str, Any] = {}
    large = False
    if operation.body:
        body, large = await read_fields(call.request, limits, bool(operation.large_body), call.router.heavy_lane)
    else:
        # GET, DELETE, LIST: Vault reads the query string as the request's data (keys/:name?context=...).
        body = {name: value for name, value in call.request.query.items() if name in path.body_names}
    call.body = body
    batched = operation.batch is not None and body.get("batch_input") is not None
    args, single = _parse_top_level(path, body, batched)
    if operation.body:
        call._warnings = ignored_field_warnings(body, path.body_names, call.params)
    if operation.batch is None:
        await _before_handler(call)
        reply = _as_reply(await operation.handler(call, args), operation)
        call.crypto_count = 1 if operation.crypto else 0
        return reply
    if batched:
        raw_items = _raw_items(body["batch_input"], max_batch_items)
        if operation.batch.check is not None:
            operation.batch.check(raw_items)
        items = _parse_items(path, raw_items, large)
    else:
        items = Items([single], [None], batched=False, large=large)
    await _before_handler(call)
    await operation.handler(call, args, items)
    if operation.crypto:
        # An item has a result only if it succeeded (a failed one keeps None beside its error).
        call.crypto_count = len(items.results) - items.results.count(None)
    if not batched:
        return Reply(_answered(items.results[0]))
    return _batch_reply(operation.batch, args, items, [item.get("reference", "") for item in items.values])


async def _before_handler(call: Call) -> None:
    """The router's hook once the request is read and valid, before it can change anything (the audit
    log's request record; it raises to refuse the request)."""
    if call.router.on_request is not None:
        await call.router.on_request(call)


def _parse_top_level(path: Path, body: dict[str, Any], batched: bool) -> tuple[dict[str, Any], dict[str, Any]]:
    """The request-level values, and the item fields' values from the top level (unused in batch mode, where
    they are not even parsed: Vault ignores them). Parsed in declaration order, so the first bad field in
    the schema is the one reported."""
    args: dict[str, Any] = {}
    single: dict[str, Any] = {}
    for f, absent in path.top_level_plan:
        name = f.name
        if f.batch:
            if batched:
                continue
            values = single
        else:
            values = args
        if absent is not _NEEDS_PARSE and name not in body:
            values[name] = absent  # what f.parse(None) gives, without the call
        else:
            values[name] = f.parse(body.get(name))
    return args, single


def _raw_items(raw: Any, max_items: int) -> list[dict[str, Any]]:
    if not isinstance(raw, list):
        raise InvalidRequest("failed to parse batch input: batch_input must be a list of objects")
    if not raw:
        raise InvalidRequest("missing batch input to process")
    if len(raw) > max_items:
        raise InvalidRequest(f"batch_input has {len(raw)} items; at most {max_items} are processed per request")
    for i, item in enumerate(raw):
        if not isinstance(item, dict):
            raise InvalidRequest(f"failed to parse batch input: '[{i}]' must be an object")
    return raw


def _parse_items(path: Path, raw_items: list[dict[str, Any]], large: bool) -> Items:
    """Each item's values. A wrong type or an absent required field fails the whole request (Vault's
    decode errors, which Vault answers 500; bad input is a 400 here); a bad value fails that item.

    An item holding every needed field and nothing that fails to parse (most) is the absent item with its
    present fields parsed; any other goes through ``_parse_item`` (declaration order: the first bad field
    in the schema is the one reported), so both give the same values and errors."""
    absent, named, needed = path.item_absent, path.item_field_named, path.item_needed
    values, errors = [], []
    for i, raw in enumerate(raw_items):
        item = None
        if needed <= raw.keys():
            item = absent.copy()
            try:
                for name, value in raw.items():
                    f = named.get(name)
                    if f is not None:  # other keys are ignored, as in the loop below
                        item[name] = f.parse(value)
            except UserError:
                item = None
        error = None
        if item is None:
            item, error = _parse_item(path.item_plan, i, raw)
        values.append(item)
        errors.append(error)
    return Items(values, errors, batched=True, large=large)


def _parse_item(
    plan: tuple[tuple[Field, str, Any], ...], i: int, raw: dict[str, Any]
) -> tuple[dict[str, Any], str | None]:
    """Item ``i``'s values and its error, field by field in declaration order."""
    item: dict[str, Any] = {}
    error = None
    for f, name, absent in plan:
        if name not in raw:
            if f.required is not None:
                raise InvalidRequest(f"failed to parse batch input: '[{i}].{name}' {f.required}")
            if f.missing_item is not None:
                error = error or f.missing_item
                continue
            item[name] = absent  # most item fields are absent from most items
            continue
        try:
            item[name] = f.parse(raw[name])
        except FieldTypeError as exc:
            raise InvalidRequest(f"failed to parse batch input: '[{i}].{f.name}' {exc.detail}") from None
        except UserError as exc:
            error = error or exc.message
    return item, error


def _batch_reply(batch: Batch, args: dict[str, Any], items: Items, references: list[str]) -> Reply:
    results = []
    for result, error, reference in zip(items.results, items.errors, references, strict=True):
        if error is not None:
            results.append({**batch.error_result, "error": error, "reference": reference})
        else:
            answered = _answered(result)  # the handler's own dict for this item: completed, not copied
            answered["reference"] = reference
            results.append(answered)
    status, warnings = 200, []
    failed = any(error is not None for error in items.errors)
    if batch.status_from_items and failed:
        status = 400
        code = args.get("partial_failure_response_code")
        if code is not None and not all(error is not None for error in items.errors):
            if 200 <= code <= 599 and code not in (204, 304):
                status = code
            else:
                warnings.append(
                    f"invalid HTTP response code override from partial_failure_response_code, reverting to {status}"
                )
    return Reply({"batch_results": results}, status=status, warnings=warnings)


def _answered(result: dict[str, Any] | None) -> dict[str, Any]:
    if result is None:  # a handler that neither answered nor failed an item: a bug, never the caller's fault
        raise RuntimeError("batch handler left an item without a result")
    return result


def _as_reply(value: Any, operation: Operation) -> Reply:
    if isinstance(value, Reply):
        return value
    return Reply(value, bare=operation.bare)
