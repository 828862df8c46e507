"""What a node may serve while its database cannot be reached (``--stale-while-down``).

Three states, from the moment the first failure was seen (``down_since``, monotonic seconds):

- ``AVAILABLE``: caches are trusted for ``--cache-ttl``, then checked against the database.
- ``STALE``: the database is down, and for at most ``window`` seconds a node serves what it already holds
  (keys, tokens, mounts), however old: encrypt, decrypt, sign, verify and HMAC keep working for callers and
  keys it knows. Anything else needs the database and is refused at once.
- ``DOWN``: the window has passed: nothing is served from memory any longer (fail closed). A key revoked or
  a token deleted while the database was away cannot be heard of, so this bound is what limits the damage.

Pure: the caller passes the time and says when the database failed or answered again.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class DatabaseState(enum.StrEnum):
    AVAILABLE = "available"
    STALE = "unavailable, serving from cache"
    DOWN = "unavailable"


@dataclass
class OutageWindow:
    """``window``: seconds a node serves from its caches after the database was first seen failing."""

    window: float
    down_since: float | None = None

    def failed(self, now: float) -> bool:
        """The database could not be used at ``now``; True if that begins an outage."""
        if self.down_since is not None:
            return False
        self.down_since = now
        return True

    def answered(self, now: float) -> float | None:
        """The database answered again; how long it was away (None: it was not)."""
        if self.down_since is None:
            return None
        since, self.down_since = self.down_since, None
        return now - since

    def state(self, now: float) -> DatabaseState:
        if self.down_since is None:
            return DatabaseState.AVAILABLE
        return DatabaseState.STALE if now - self.down_since < self.window else DatabaseState.DOWN

    def trusts(self, age: float, ttl: float, now: float) -> bool:
        """Whether a cache entry checked ``age`` seconds ago may answer a request without the database."""
        if self.down_since is None:  # available: the common case, decided without the state's arithmetic
            return age < ttl
        return self.state(now) is DatabaseState.STALE

    def stale_until(self) -> float | None:
        """When serving from cache stops (monotonic), if the database is down."""
        return None if self.down_since is None else self.down_since + self.window
