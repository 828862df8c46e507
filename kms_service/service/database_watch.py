"""A serving node's view of its database: noticing it go away, serving from memory for a bounded time
(``--stale-while-down``), and noticing it come back.

- A failure that says the database server is gone (``storage.database.connection_lost``: refused, reset,
  unreachable, shutting down; not a failing statement, a locked SQLite file or a busy pool) starts an
  outage: from then on the node answers from its caches only what they already hold, however old
  (``trusts``), and ``check`` refuses every other database access at once with a 503, so no request waits
  on a dead connection. After the window, caches are trusted no longer and everything is a 503 (fail
  closed).
- While down, a prober tries ``SELECT 1`` every ``PROBE_INTERVAL``. When it answers, the outage ends and
  every cache is dropped: other nodes may have changed things that this node never heard of.
- Other nodes' changes reach the caches through the change listener (``cluster.PgCluster``). While it is
  not listening (reconnecting after its connection dropped, or after an outage) and the database answers,
  no cache entry answers without a look at the database (``hears_changes``): a key trimmed or rotated, or a
  token revoked, on another node meanwhile would otherwise be served for up to --cache-ttl.

CLI commands never start the watch: for them a failure is just that command's error.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from kms_service.errors import DatabaseUnavailable
from kms_service.outage import DatabaseState, OutageWindow
from kms_service.service.invalidation import Invalidator
from kms_service.storage.database import connection_lost, unavailable_reason

log = logging.getLogger(__name__)

PROBE_INTERVAL = 0.5
PROBE_TIMEOUT = 5.0


class DatabaseWatch:
    def __init__(self, engine: AsyncEngine, invalidator: Invalidator, window: float) -> None:
        self._engine = engine
        self._invalidator = invalidator
        self.outage = OutageWindow(window)
        self._down = asyncio.Event()
        self._prober: asyncio.Task | None = None
        self.outages = 0  # how many began since start (metrics, tests)
        # False while the change listener is not listening (set by it through ``hearing``).
        self.hears_changes = True
        # Called when the database is back after an outage (the change listener: reconnect now).
        self.on_back: Callable[[], None] | None = None

    @property
    def active(self) -> bool:
        return self._prober is not None

    async def start(self) -> None:
        self._prober = asyncio.create_task(self._probe_while_down(), name="kms database prober")

    async def stop(self) -> None:
        if self._prober is not None:
            self._prober.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._prober
            self._prober = None

    def state(self) -> DatabaseState:
        return self.outage.state(time.monotonic())

    def failed(self, reason: str) -> None:
        """The database could not be used (``reason``: one line, never SQL or values)."""
        if not self.active:
            return
        if self.outage.failed(time.monotonic()):
            self.outages += 1
            self._down.set()
            log.error(
                "lost the database (%s): serving keys and tokens already in memory for up to %g s "
                "(--stale-while-down); anything else gets 503 until it is back",
                reason,
                self.outage.window,
            )

    def noticed(self, exc: BaseException) -> bool:
        """Record ``exc`` if it says the database server is gone (``connection_lost``: not a failing
        statement, a locked SQLite file or a busy pool); True if a cache may then answer with what it holds
        (the window allows it)."""
        if isinstance(exc, DatabaseUnavailable):
            pass  # refused by ``check``: the outage is known
        elif connection_lost(exc):
            self.failed(unavailable_reason(exc) or type(exc).__name__)
        else:
            return False
        return self.state() is DatabaseState.STALE

    def hearing(self, heard: bool) -> None:
        """The change listener is listening (True) or not (False)."""
        self.hears_changes = heard

    def trusts(self, age: float, ttl: float) -> bool:
        """Whether a cache entry checked ``age`` seconds ago answers without asking the database."""
        outage = self.outage
        if outage.down_since is None:  # available (the common case: no clock read)
            return age < ttl and self.hears_changes
        return outage.trusts(age, ttl, time.monotonic())

    def check(self) -> None:
        """Before any database access: refuse it at once during an outage (the prober looks for its end)."""
        state = self.outage.state(time.monotonic())
        if state is DatabaseState.AVAILABLE:
            return
        if state is DatabaseState.STALE:
            raise DatabaseUnavailable()
        raise DatabaseUnavailable(
            f"database unavailable for more than {self.outage.window:g} s (--stale-while-down): "
            "nothing is served from memory until it is back"
        )

    async def _probe_while_down(self) -> None:
        while True:
            await self._down.wait()
            await asyncio.sleep(PROBE_INTERVAL)
            try:
                async with asyncio.timeout(PROBE_TIMEOUT):
                    async with self._engine.connect() as conn:
                        await conn.execute(text("SELECT 1"))
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - still down: try again
                log.debug("database still unreachable (%s)", type(exc).__name__)
                continue
            away = self.outage.answered(time.monotonic())
            self._down.clear()
            # Changes committed meanwhile by other nodes were never heard: forget everything.
            self._invalidator.flush_all()
            if away is not None:
                log.warning("the database is back after %.1f s; dropped every cache", away)
            if self.on_back is not None:
                self.on_back()
