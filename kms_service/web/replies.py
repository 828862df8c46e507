"""Vault's response envelopes, with ``Content-Type: application/json`` exactly (hvac checks it).

Every envelope carries the request's id in Vault's ``request_id`` (the same id is in the ``X-Request-Id``
header and in the access log line)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import orjson

JSON_HEADERS = {"Content-Type": "application/json", "Cache-Control": "no-store"}


@dataclass
class Reply:
    data: dict[str, Any] | None = None
    status: int = 200
    warnings: list[str] = field(default_factory=list)
    # sys/health answers with the bare object, not the envelope (as Vault does).
    bare: bool = False
    # sys/capabilities(-self): the data also at the top level of the envelope (Vault's older clients read it
    # there).
    top_level: bool = False
    # Vault's ``auth`` block (auth/token/create, renew): ``data`` is null then.
    auth: dict[str, Any] | None = None
    # A body that is not JSON (sys/metrics in Prometheus' text format), sent as is with ``content_type``.
    body: bytes | None = None
    content_type: str = "application/json"
    # ``body`` is a whole Vault envelope already (sys/wrapping/unwrap answers the wrapped one as it was).
    envelope: bool = False
    # Vault's ``wrap_info`` of a wrapped response: ``data`` and ``auth`` are null then.
    wrap_info: dict[str, Any] | None = None

    @property
    def wrappable(self) -> bool:
        """Whether X-Vault-Wrap-TTL wraps this answer: a successful one with data or auth (not a bare object, a
        204, an error or an answer that is wrapped already), as in Vault."""
        if not 200 <= self.status < 300 or self.wrap_info is not None:
            return False
        if self.body is not None:
            return self.envelope
        return not self.bare and (self.data is not None or self.auth is not None)


class Answer:
    """A response ready to go: its status, headers and body (the edge, ``server.py``, sends it)."""

    __slots__ = ("status", "headers", "body")

    def __init__(self, status: int, headers: dict[str, str], body: bytes | None = None) -> None:
        self.status = status
        self.headers = headers
        self.body = body


def encode(payload: Any) -> bytes:
    """Compact JSON in UTF-8 and a newline: orjson's bytes, which are the standard library's for every
    value a reply holds (tests/test_replies.py); what orjson refuses (an integer past 64 bits) goes
    through the standard library."""
    try:
        return orjson.dumps(payload, option=orjson.OPT_NON_STR_KEYS | orjson.OPT_APPEND_NEWLINE)
    except (orjson.JSONEncodeError, TypeError):
        return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"


def json_response(payload: Any, status: int) -> Answer:
    return Answer(status, {**JSON_HEADERS}, encode(payload))


def success(reply: Reply, extra_warnings: list[str], request_id: str) -> Answer:
    if reply.wrap_info is not None:
        # Vault's answer for a wrapped response: nothing of it but the wrapping token and what it says.
        envelope = {
            "request_id": "",
            "lease_id": "",
            "renewable": False,
            "lease_duration": 0,
            "data": None,
            "wrap_info": reply.wrap_info,
            "warnings": None,
            "auth": None,
        }
        return json_response(envelope, 200)
    if reply.body is not None:
        return Answer(reply.status, {"Content-Type": reply.content_type, "Cache-Control": "no-store"}, reply.body)
    if reply.auth is not None:
        envelope = {
            "request_id": request_id,
            "lease_id": "",
            "renewable": False,
            "lease_duration": 0,
            "data": None,
            "wrap_info": None,
            "warnings": (reply.warnings + extra_warnings) or None,
            "auth": reply.auth,
        }
        return json_response(envelope, reply.status)
    if reply.data is None and not reply.warnings:
        return Answer(204, {**JSON_HEADERS})
    if reply.bare:
        return json_response(reply.data, reply.status)
    warnings = reply.warnings + extra_warnings
    envelope = {
        "request_id": request_id,
        "lease_id": "",
        "renewable": False,
        "lease_duration": 0,
        "data": dict(sorted(reply.data.items())) if reply.data is not None else None,  # None: only warnings
        "wrap_info": None,
        "warnings": warnings or None,
        "auth": None,
    }
    if reply.top_level:
        envelope = {**reply.data, **envelope}
    return json_response(envelope, reply.status)


def error(status: int, messages: list[str]) -> Answer:
    return json_response({"errors": messages}, status)
