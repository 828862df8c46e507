"""Helpers the in-memory caches share."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass


@dataclass
class CacheStats:
    """Lookups a cache answered from memory (hits) and those that went to the database (misses); read by
    the metrics endpoint. Plain integers: the event loop is the only writer."""

    hits: int = 0
    misses: int = 0


class SingleFlight:
    """At most one cache load per key at a time: a cold or stale entry under load must not send every
    waiting request to the database. Waiters re-check the cache once they get the lock."""

    def __init__(self) -> None:
        self._locks: dict[object, asyncio.Lock] = {}

    @asynccontextmanager
    async def __call__(self, key: object) -> AsyncIterator[None]:
        lock = self._locks.setdefault(key, asyncio.Lock())
        try:
            async with lock:
                yield
        finally:
            self._locks.pop(key, None)
