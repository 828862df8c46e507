"""Tokens: generation, hashing and header parsing. Pure.

The database keeps only ``HMAC-SHA256(token_key, token)`` and a random, non-secret accessor; the HMAC key
derives from the master key, so a copy of the database alone can neither read nor forge a token.
Endpoint tokens are derived (HMAC of their accessor under another master subkey), which lets
``relationships`` print the same token again without the database ever holding it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from multidict import CIMultiDictProxy

from kms_service.durations import DurationError, parse_seconds
from kms_service.errors import InvalidRequest

TOKEN_PREFIX = "kms."  # noqa: S105 (a prefix, not a secret)
_TOKEN_RE = re.compile(r"kms\.[A-Za-z0-9_-]{43}", re.ASCII)
ACCESSOR_RE = re.compile(r"[0-9a-f]{24}", re.ASCII)


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def new_accessor() -> str:
    return secrets.token_hex(12)


def derived_token(endpoint_token_key: bytes, accessor: str) -> str:
    digest = hmac.new(endpoint_token_key, accessor.encode("ascii"), hashlib.sha256).digest()
    return TOKEN_PREFIX + base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def token_digest(token_hmac_key: bytes, token: str) -> bytes:
    return hmac.new(token_hmac_key, token.encode("ascii"), hashlib.sha256).digest()


def looks_like_token(value: str) -> bool:
    return bool(_TOKEN_RE.fullmatch(value))


def token_from_headers(headers: CIMultiDictProxy[str]) -> str | None:
    """``X-Vault-Token`` wins; else ``Authorization: Bearer``. Anything malformed counts as no token."""
    values = headers.getall("X-Vault-Token", [])
    if len(values) > 1:
        return None
    token = values[0].strip() if values else None
    if not token:
        for value in headers.getall("Authorization", []):
            if value.startswith("Bearer "):
                token = value[len("Bearer ") :].strip()
                break
    if token and looks_like_token(token):
        return token
    return None


def presented_token(headers: CIMultiDictProxy[str]) -> str:
    """The token a request presents, as sent (``X-Vault-Token``, else ``Authorization: Bearer``), or "": a
    wrapping token is looked up as given, so a malformed one is "not valid", not "empty" (as in Vault)."""
    token = headers.get("X-Vault-Token", "").strip()
    if not token:
        for value in headers.getall("Authorization", []):
            if value.startswith("Bearer "):
                return value[len("Bearer ") :].strip()
    return token


WRAP_TTL_HEADER = "X-Vault-Wrap-TTL"
WRAP_FORMAT_HEADER = "X-Vault-Wrap-Format"


def wrap_ttl_from_headers(headers: CIMultiDictProxy[str]) -> int | None:
    """The response-wrapping TTL a request asks for in seconds (``X-Vault-Wrap-TTL``, which the bao CLI's
    ``-wrap-ttl`` and hvac's ``wrap_ttl`` send), or None: not wrapped (absent, or 0 as in Vault). Raises
    InvalidRequest in Vault's words."""
    raw = headers.get(WRAP_TTL_HEADER)
    if raw is None or raw == "":
        return None
    prefix = f"error parsing {WRAP_TTL_HEADER} header"
    text = raw.strip()
    if text.startswith("-"):
        raise InvalidRequest(f"{prefix}: requested wrap ttl cannot be negative")
    try:
        seconds = parse_seconds(text)
    except DurationError:
        shown = text if len(text) <= 64 and text.isprintable() else "..."
        raise InvalidRequest(f'{prefix}: time: invalid duration "{shown}"') from None
    wrap_format = headers.get(WRAP_FORMAT_HEADER, "")
    if wrap_format not in ("", "uuid"):
        # Vault's "jwt" format makes the token a signed JWT; this server's tokens are random only.
        raise InvalidRequest(f"{WRAP_FORMAT_HEADER} {wrap_format!r} is not supported by this server")
    return seconds or None


@dataclass(frozen=True)
class TokenInfo:
    """What the server knows about a presented token (never the token itself)."""

    accessor: str
    policies: tuple[str, ...]
    display_name: str
    created_at: datetime
    expires_at: datetime | None
    # Vault's lifecycle (auth/token/create): the creator's accessor (None: an orphan), uses left (0: no
    # limit), whether renew may extend it, the creation TTL and the hard limit in seconds (0: none), metadata.
    parent_accessor: str | None = None
    num_uses: int = 0
    renewable: bool = False
    ttl: int = 0
    explicit_max_ttl: int = 0
    meta: Mapping[str, str] | None = None
    endpoint: str | None = None
    # The namespace it was made in ("" the root; "ns1/"): its policies are that namespace's.
    namespace: str = ""

    def expired(self, now: datetime) -> bool:
        return self.expires_at is not None and self.expires_at <= now
