"""Helpers the in-memory caches share."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from kms_service.service.database_watch import DatabaseWatch

log = logging.getLogger(__name__)

# An entry older than this share of --cache-ttl still answers, and is re-read in the background meanwhile
# (BackgroundRefresh): under load a read waits behind every ready request on the event loop (up to seconds
# at 256 connections), and requests that found the entry expired all waited for it. They wait now only if
# the background read has not finished by the time the entry expires; the bound on staleness is unchanged.
REFRESH_AHEAD = 0.5
REFRESH_TASK_NAME = "kms cache refresh"


@dataclass
class CacheStats:
    """Lookups a cache answered from memory (hits) and those that went to the database (misses); read by
    the metrics endpoint. Plain integers: the event loop is the only writer."""

    hits: int = 0
    misses: int = 0


class BackgroundRefresh:
    """At most one background refresh per cache key at a time; each task is held until it ends. A failure
    that says the database is gone is the watch's to hear (an outage then starts at once); any other is left
    to the request that finds the entry expired: it reads itself and answers for the outcome."""

    def __init__(self, watch: DatabaseWatch, ttl: float) -> None:
        self._watch = watch
        # An entry this old (seconds) is due for a background read (REFRESH_AHEAD of the ttl).
        self.after = ttl * REFRESH_AHEAD
        self._tasks: dict[object, asyncio.Task[None]] = {}

    def due(self, key: object, age: float) -> bool:
        """Whether the entry ``key``, ``age`` seconds old, is to be read again now (none under way for it)."""
        return age >= self.after and key not in self._tasks

    def start(self, key: object, refresh: Callable[[], Awaitable[None]]) -> None:
        if key not in self._tasks and self._watch.outage.down_since is None:
            task = asyncio.get_running_loop().create_task(self._run(key, refresh), name=REFRESH_TASK_NAME)
            self._tasks[key] = task

    async def _run(self, key: object, refresh: Callable[[], Awaitable[None]]) -> None:
        try:
            await refresh()
        except Exception as exc:
            self._watch.noticed(exc)
            log.debug("background cache refresh failed: %s", type(exc).__name__)
        finally:
            self._tasks.pop(key, None)

    async def stop(self) -> None:
        """Cancel the refreshes under way and wait for them (before the engine is disposed)."""
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


class SingleFlight:
    """At most one holder per key at a time (a cache load, a usage reservation): a cold or stale entry under
    load must not send every waiting request to the database. When the holder leaves, every request waiting
    for that key wakes in the same event-loop turn and re-checks; the first to run becomes the next holder if
    one is still needed, and the rest, finding the cache filled, go on without waiting again.

    Not an ``asyncio.Lock``: a lock hands over to one waiter per event-loop turn, and under load each turn
    serves every ready request (some 16 ms at 256 connections on one core), so the last of N waiters waited N
    turns, a second and more for the first requests after an idle spell. The price: no first-come order
    (a request arriving as the holder leaves may hold next, ahead of those waiting, which then find its
    work done), and each handover wakes every waiter of the key, so keys are kept narrow (one cache entry,
    one key's usage counts)."""

    def __init__(self) -> None:
        self._flights: dict[object, asyncio.Future[None]] = {}

    @asynccontextmanager
    async def __call__(self, key: object) -> AsyncIterator[None]:
        while (flight := self._flights.get(key)) is not None:
            await asyncio.wait((flight,))  # a waiter's cancellation must not cancel the holder's future
        flight = self._flights[key] = asyncio.get_running_loop().create_future()
        try:
            yield
        finally:
            del self._flights[key]
            flight.set_result(None)
