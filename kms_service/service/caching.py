"""The in-memory caches' one implementation (``RefreshingCache``) and its parts: ``SingleFlight`` (one
load per entry at a time), ``BackgroundRefresh`` (refresh-ahead), ``CacheStats``. Keys, tokens and the mount
table each configure a ``RefreshingCache``."""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Generic, TypeVar

from kms_service.service.database_watch import DatabaseWatch
from kms_service.service.invalidation import Invalidator

log = logging.getLogger(__name__)

# An entry older than this share of --cache-ttl still answers, and is re-read in the background meanwhile
# (BackgroundRefresh): under load a read waits behind every ready request on the event loop (up to seconds
# at 256 connections), and requests that found the entry expired all waited for it. They wait now only if
# the background read has not finished by the time the entry expires; the bound on staleness is unchanged.
REFRESH_AHEAD = 0.5
REFRESH_TASK_NAME = "kms cache refresh"

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")
R = TypeVar("R")  # what a request passes to the loader


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


@dataclass
class _Entry(Generic[V]):
    value: V
    # time.monotonic() when the database last gave or confirmed it; -inf: read again at the next use.
    checked_at: float


class OnRace(enum.Enum):
    """What a load does with its value when a change was published while it read (``Invalidator.epoch``
    moved): the change may have committed after the read, so the value may predate it."""

    CACHE_DUE = "cache due"  # cached as due: the next use reads again (a key: one cheap generation check)
    ANSWER_ONLY = "answer only"  # answers the request that read it, and is not cached


class RefreshingCache(Generic[K, V, R]):
    """Entries read from the database, each answering for ``ttl`` seconds (``DatabaseWatch.trusts``: during
    an outage, within --stale-while-down). A cold or expired entry is loaded by one request at a time
    (``SingleFlight``: the others wait, then find it filled); an entry past REFRESH_AHEAD of the ttl answers
    and is read again by one background task (``BackgroundRefresh``). A load that fails because the database
    went away answers with the entry it held, if the outage window allows it.

    A service configures it, and drops entries when its changes arrive (``drop``, ``drop_alias``, ``clear``,
    ``expire``):

    - ``load(key, held, request)``: read the entry from the database. ``held``: the value cached now,
      however old (a loader may confirm it cheaply and return it), or None. ``request``: what the caller of
      ``get`` passed along (a token, the key version it needs).
    - ``keep(value)``: whether a loaded value is cached (False: it answers, and the key's entry goes).
    - ``replaces(cached, loaded)``: whether a value read now replaces the one cached meanwhile.
    - ``usable(value, request)``: besides its age, whether a cached value answers this request.
    - ``stale_answers(value, request)``: whether a held value answers when its load failed during an outage.
    - ``on_race``: see ``OnRace``.
    - ``alias(value)``: a second name an entry can be dropped by (a token's accessor); None: none.
    - ``max_entries``: past it the oldest entry goes (0: unbounded).
    - ``stats``: hits and misses of ``get`` (None: not counted).
    """

    def __init__(
        self,
        *,
        ttl: float,
        watch: DatabaseWatch,
        invalidator: Invalidator,
        load: Callable[[K, V | None, R], Awaitable[V]],
        keep: Callable[[V], bool] | None = None,
        replaces: Callable[[V, V], bool] | None = None,
        usable: Callable[[V, R], bool] | None = None,
        stale_answers: Callable[[V, R], bool] | None = None,
        on_race: OnRace = OnRace.CACHE_DUE,
        alias: Callable[[V], Hashable | None] | None = None,
        max_entries: int = 0,
        stats: CacheStats | None = None,
    ) -> None:
        self.ttl = ttl
        self._watch = watch
        self._invalidator = invalidator
        self._load = load
        self._keep = keep
        self._replaces = replaces
        self._usable = usable
        self._stale_answers = stale_answers
        self._on_race = on_race
        self._alias = alias
        # Several entries may share an alias (a token and the batch tokens it made, by its accessor).
        self._aliases: dict[Hashable, set[K]] = {}
        self._max_entries = max_entries
        self.stats = stats
        self._entries: OrderedDict[K, _Entry[V]] = OrderedDict()
        self._flights = SingleFlight()
        self._ahead = BackgroundRefresh(watch, ttl)

    async def get(self, key: K, request: R) -> V:
        """The entry's value: from memory while it answers, else loaded (by one request at a time)."""
        entry = self._entries.get(key)
        if entry is not None and self._answers(key, entry, request):
            if self.stats is not None:
                self.stats.hits += 1
            return entry.value
        if self.stats is not None:
            self.stats.misses += 1
        async with self._flights(key):
            entry = self._entries.get(key)  # filled meanwhile by the request that held the flight?
            if entry is not None and self._answers(key, entry, request):
                return entry.value
            return await self._load_or_stale(key, entry, request)

    def _answers(self, key: K, entry: _Entry[V], request: R) -> bool:
        if self._usable is not None and not self._usable(entry.value, request):
            return False
        age = time.monotonic() - entry.checked_at
        if not self._watch.trusts(age, self.ttl):
            return False
        if self._ahead.due(key, age):
            self._ahead.start(key, lambda: self._refresh_ahead(key, request))  # it answers meanwhile
        return True

    async def _refresh_ahead(self, key: K, request: R) -> None:
        async with self._flights(key):
            entry = self._entries.get(key)
            if entry is not None and time.monotonic() - entry.checked_at >= self._ahead.after:
                await self._read(key, entry, request)

    async def _load_or_stale(self, key: K, held: _Entry[V] | None, request: R) -> V:
        try:
            return await self._read(key, held, request)
        except Exception as exc:
            # The database went away as this entry came due: within --stale-while-down it still answers.
            if held is None or not self._watch.noticed(exc):
                raise
            if self._stale_answers is not None and not self._stale_answers(held.value, request):
                raise
            return held.value

    async def _read(self, key: K, held: _Entry[V] | None, request: R) -> V:
        epoch = self._invalidator.epoch
        value = await self._load(key, None if held is None else held.value, request)
        return self.put(key, value, epoch)

    async def reload(self, key: K, request: R, unless: Callable[[], bool] | None = None) -> None:
        """Read the entry again now, unless ``unless()`` once this request's turn comes (a read that was
        waited for may have made this one needless): the requests that asked together wait for one read."""
        async with self._flights(key):
            if unless is None or not unless():
                await self._read(key, self._entries.get(key), request)

    def put(self, key: K, value: V, epoch: int | None = None) -> V:
        """Cache ``value`` (a load's, or a writer's, read in its own transaction); returns the value that
        answers: a cached one it does not replace wins. ``epoch``: ``Invalidator.epoch`` before ``value``
        was read (None: now)."""
        if self._keep is not None and not self._keep(value):
            self.drop(key)
            return value
        raced = epoch is not None and epoch != self._invalidator.epoch
        if raced and self._on_race is OnRace.ANSWER_ONLY:
            return value
        entries = self._entries
        current = entries.get(key)
        if current is not None:
            if self._replaces is not None and not self._replaces(current.value, value):
                return current.value
            self._unalias(current.value, key)
        entries[key] = _Entry(value, float("-inf") if raced else time.monotonic())
        entries.move_to_end(key)
        if self._alias is not None and (name := self._alias(value)) is not None:
            self._aliases.setdefault(name, set()).add(key)
        while self._max_entries and len(entries) > self._max_entries:
            evicted_key, evicted = entries.popitem(last=False)
            self._unalias(evicted.value, evicted_key)
        return value

    def peek(self, key: K) -> V | None:
        """The cached value however old (None: none), for what needs no freshness."""
        entry = self._entries.get(key)
        return None if entry is None else entry.value

    def drop(self, key: K) -> None:
        entry = self._entries.pop(key, None)
        if entry is not None:
            self._unalias(entry.value, key)

    def drop_alias(self, name: Hashable) -> None:
        for key in self._aliases.pop(name, ()):
            self._entries.pop(key, None)

    def expire(self, key: K) -> None:
        """Keep the entry (it may still answer during an outage) but read it again at its next use."""
        entry = self._entries.get(key)
        if entry is not None:
            entry.checked_at = float("-inf")

    def clear(self) -> None:
        self._entries.clear()
        self._aliases.clear()

    def _unalias(self, value: V, key: K) -> None:
        if self._alias is None or (name := self._alias(value)) is None:
            return
        keys = self._aliases.get(name)
        if keys is not None:
            keys.discard(key)
            if not keys:
                del self._aliases[name]

    async def stop_refreshing(self) -> None:
        """Cancel the background reads under way and wait for them (before the engine is disposed)."""
        await self._ahead.stop()
