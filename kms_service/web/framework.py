"""Declarative paths, after Vault's ``framework.Path``: a URL pattern, a field schema, operations by method.

Adding an endpoint is one handler plus one ``Path`` in its family's ``PATHS`` (``web/paths.py`` lists the
families: that is the one table). The router (``web/routing.py``) finds the path, checks the token and the
ACL; ``web/execution.py`` turns the body into typed values (``web/body.py`` reads it), calls the handler
and answers batches; ``web/openapi.py`` documents the same table.

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

import dataclasses
import enum
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from kms_service.acl import Capability
from kms_service.errors import InvalidRequest
from kms_service.settings import DEFAULTS
from kms_service.web.body import HeavyLane
from kms_service.web.fields import (
    parse_base64,
    parse_boolean,
    parse_comma_list,
    parse_integer,
    parse_list,
    parse_map,
    parse_string,
)
from kms_service.web.incoming import IncomingRequest

if TYPE_CHECKING:
    from kms_service.keyring import Key
    from kms_service.mounts import Mount
    from kms_service.service import KMS, Principal
    from kms_service.service.keys import KeyService

# The most items one request may carry in batch_input (each is parsed and answered in memory).
MAX_BATCH_ITEMS = DEFAULTS.max_batch_items


# Methods an operation may be declared for. PUT is POST (Vault: both are "update", or "create").
METHODS = ("GET", "HEAD", "POST", "DELETE", "LIST", "PATCH")

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
    COMMA_LIST = "comma_list"  # Vault's comma-string slice: a list of strings, or one string "a,b"
    MAP = "map"
    DURATION = "duration"  # seconds or a duration string ("1h"); passed to the handler as given
    VERSION = "version"  # a key version: a JSON integer, or a string (an integer, "v<integer>", "latest")


PARSERS: dict[FieldType, Callable[[str, Any], Any]] = {
    FieldType.STRING: parse_string,
    FieldType.BASE64: parse_base64,
    FieldType.INT: parse_integer,
    FieldType.BOOL: parse_boolean,
    FieldType.LIST: parse_list,
    FieldType.COMMA_LIST: parse_comma_list,
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
    # False: any valid token may call it.
    check_acl: bool = True
    # True: the token's policies are asked about the path in the token's own namespace, whatever namespace the
    # request names (Vault's auth/token/*-self: a token looks itself up from any namespace below its own).
    acl_in_token_namespace: bool = False
    # Recorded in the audit log although not authenticated by the router (sys/wrapping/unwrap checks its
    # tokens itself).
    audited: bool = False

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
    # The namespace the request is in ("" the root; "ns1/"): the X-Vault-Namespace header and the path's prefix.
    namespace: str = ""
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
    # The path as the ACL sees it (``<path>/`` for a list), and the response-wrapping TTL asked for
    # (X-Vault-Wrap-TTL; None: not wrapped).
    acl_path: str = ""
    # The path the token's policies were asked about: acl_path as the token's namespace sees it.
    policy_path: str = ""
    wrap_ttl: int | None = None
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

    def set_field_warnings(self, warnings: list[str]) -> None:
        """The warnings for the body's fields (ignored, or taken from the URL), before the handler adds its own."""
        self._warnings = warnings
