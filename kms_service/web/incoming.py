"""What the service gets of an HTTP request: ``IncomingRequest``, the one thing the edge (``server.py``) hands
the service (``app.handle``), which answers with a ``replies.Answer``. No HTTP library's object reaches the
router, the framework or a handler: the edge builds this from aiohttp's request and turns the answer into
aiohttp's response."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol


class Body(Protocol):
    """A request's body as it arrives. A client that goes away meanwhile is ``ClientGone``."""

    def received(self) -> bytes | None:
        """The whole body when it is in already (a small request arrives in one read), else None."""

    def chunks(self) -> AsyncIterator[bytes]:
        """The body's bytes, chunk by chunk as they arrive."""


@dataclass(frozen=True, slots=True)
class IncomingRequest:
    method: str
    # The path and query string as sent (percent-escapes kept), and the decoded path.
    raw_path: str
    path: str
    query: Mapping[str, str]
    headers: Mapping[str, str]  # case-insensitive names
    content_length: int | None
    # The client's address (None: unknown, e.g. a Unix socket).
    remote: str | None
    body: Body
    # The service this request is for (``app.ServiceApp``: its state by key).
    app: Any
    # What the service notes about this request while answering it (its id, its routed call), by key.
    notes: dict[Any, Any] = field(default_factory=dict)

    def __getitem__(self, key: Any) -> Any:
        return self.notes[key]

    def __setitem__(self, key: Any, value: Any) -> None:
        self.notes[key] = value

    def __contains__(self, key: Any) -> bool:
        return key in self.notes

    def get(self, key: Any, default: Any = None) -> Any:
        return self.notes.get(key, default)
