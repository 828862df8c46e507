"""The request body: how large it may be and what its JSON may hold (``RequestLimits``), reading it within
those limits, and the lane large bodies are parsed in (``HeavyLane``)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from kms_service.errors import InvalidRequest, PayloadTooLarge
from kms_service.settings import DEFAULTS
from kms_service.web.fields import (
    DEFAULT_LIMITS,
    JsonLimits,
    is_form_type,
    parse_body,
    token_bound,
    too_many_tokens,
)
from kms_service.web.incoming import IncomingRequest

T = TypeVar("T")

# Bodies up to this size are parsed on the event loop (the values bound makes that at most ~1 ms); larger
# ones in a worker thread, so other requests go on meanwhile.
PARSE_INLINE_BYTES = 64 * 1024


@dataclass(frozen=True)
class RequestLimits:
    """How large a body may be (per path: single-item, or batch and backup) and what its JSON may hold."""

    max_body: int = DEFAULTS.max_request_bytes
    max_large_body: int = DEFAULTS.max_batch_request_bytes
    json: JsonLimits = DEFAULT_LIMITS
    max_batch_items: int = DEFAULTS.max_batch_items


# After parsing a large body, wait this many times as long as the parse took, while other requests are
# being served (HeavyLane).
HEAVY_PAUSE = 5.0
# Other requests seen within this many seconds before a heavy job ends make it pause (HeavyLane).
LIGHT_WINDOW = 1.0


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
