"""The invalidation seam: every committed change says what it changed, and every cache hears it.

Writers record changes on their transaction (``Database.writing`` collects them); once it commits, the
``Invalidator`` delivers them to the caches of this process. A transport (PostgreSQL's
LISTEN/NOTIFY between nodes, or a change counter between workers) plugs in here: it is told about each change inside the
transaction, so a notification can go out atomically with it, and it delivers remote changes through
``publish``. No cache is dropped anywhere else.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

log = logging.getLogger(__name__)


class Kind:
    KEY = "key"  # name: the key's reference (its name in transit/, <mount>/<name> elsewhere)
    TOKEN = "token"  # noqa: S105 (a kind, not a secret); name: the token's accessor
    POLICY = "policy"  # name: the policy's name
    ENDPOINT = "endpoint"  # name: the endpoint's name (its tokens' policies changed)
    MOUNT = "mount"  # name: the mount's path


@dataclass(frozen=True)
class Change:
    """What one write changed. ``name`` None means every entry of that kind."""

    kind: str
    name: str | None = None


class Transport(Protocol):
    async def in_transaction(self, connection: Any, changes: list[Change]) -> None:
        """Called inside the writing transaction, before commit (e.g. to send NOTIFY with it)."""


Subscriber = Callable[[Change], None]


class Invalidator:
    def __init__(self) -> None:
        self._subscribers: dict[str, list[Subscriber]] = {}
        self.transports: list[Transport] = []
        # Counts published changes. A cache that read the database while this moved must not trust what it
        # read (a change may have committed after the read and been published before the read was cached).
        self.epoch = 0

    def subscribe(self, kind: str, callback: Subscriber) -> None:
        self._subscribers.setdefault(kind, []).append(callback)

    async def before_commit(self, connection: Any, changes: list[Change]) -> None:
        for transport in self.transports:
            await transport.in_transaction(connection, changes)

    def publish(self, changes: Iterable[Change]) -> None:
        """Apply committed changes (local or from a transport) to every subscribed cache."""
        self.epoch += 1
        for change in changes:
            for callback in self._subscribers.get(change.kind, ()):
                callback(change)

    def flush_all(self) -> None:
        """Drop every entry of every cache (a transport may have missed changes)."""
        self.publish([Change(kind) for kind in self._subscribers])


# A function a writer calls inside its transaction: ``await changed(session, Change(...))``.
Recorder = Callable[..., Awaitable[None]]
