"""Running one operation of the path table (``web/framework.py``): the body parsed against the path's
fields, the handler called, its answer shaped; an operation that takes ``batch_input`` answers its ``Items``
one by one, in a worker thread when they are many or slow."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from kms_service.errors import InvalidRequest, UserError
from kms_service.web.body import RequestLimits, read_fields
from kms_service.web.fields import FieldTypeError, ignored_field_warnings
from kms_service.web.framework import _NEEDS_PARSE, Batch, Call, Field, Operation, Path
from kms_service.web.replies import Reply

T = TypeVar("T")

# Batches of at least this many items are answered in a worker thread (Items.respond); smaller ones on the
# event loop, where a thread's hand-off would cost more than it saves (100 items: about 2 ms).
OFFLOAD_ITEMS = 250

# Items answered off the event loop (slow operations, large bodies, large batches) run in these threads, not
# the default executor's: they never queue ahead of a key's first load or of the heavy lane (which has its
# own thread). ``cryptography`` releases the interpreter inside its calls, so they use every core.
CRYPTO_THREADS = ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 1), thread_name_prefix="kms-crypto")


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
        call.set_field_warnings(ignored_field_warnings(body, path.body_names, call.params))
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
