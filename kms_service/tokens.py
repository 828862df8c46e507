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
import json
import re
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from multidict import CIMultiDictProxy

from kms_service.durations import DurationError, parse_seconds
from kms_service.errors import InvalidRequest

TOKEN_PREFIX = "kms."  # noqa: S105 (a prefix, not a secret)
# Batch tokens carry their own values, sealed (Vault's "hvb." tokens): nothing of them is stored.
BATCH_TOKEN_PREFIX = "kmsb."  # noqa: S105 (a prefix, not a secret)
_TOKEN_RE = re.compile(r"kms\.[A-Za-z0-9_-]{43}", re.ASCII)
# Nonce, sealed JSON and tag; the values a batch token carries stay far below this.
_BATCH_TOKEN_RE = re.compile(r"kmsb\.[A-Za-z0-9_-]{40,4096}", re.ASCII)
MAX_BATCH_TOKEN = 4096 + len(BATCH_TOKEN_PREFIX)
ACCESSOR_RE = re.compile(r"[0-9a-f]{24}", re.ASCII)
SERVICE = "service"
BATCH = "batch"
TOKEN_TYPES = (SERVICE, BATCH)
_DISPLAY_NAME_UNSAFE = re.compile(r"[^A-Za-z0-9-]", re.ASCII)
# Vault's display names are free text; a longer one is cut to what the tokens table holds.
MAX_DISPLAY_NAME = 128


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
    return bool(_TOKEN_RE.fullmatch(value) or _BATCH_TOKEN_RE.fullmatch(value))


def is_batch_token(value: str) -> bool:
    return bool(_BATCH_TOKEN_RE.fullmatch(value))


def clean_display_name(name: str) -> str:
    """Vault's display name of a created token: "token-" and the name, each character outside
    ``[A-Za-z0-9-]`` made "-" and one trailing "-" dropped; no escape code or line break survives."""
    if not name:
        return "token"
    cleaned = _DISPLAY_NAME_UNSAFE.sub("-", "token-" + name).removesuffix("-")
    return cleaned[:MAX_DISPLAY_NAME]


def clean_cli_display_name(name: str) -> str:
    """An operator's display name (``token create --display-name``): Vault's characters, no prefix."""
    return _DISPLAY_NAME_UNSAFE.sub("-", name)[:MAX_DISPLAY_NAME] or "token"


def batch_token_key(token_hmac_key: bytes) -> bytes:
    """The AES-256-GCM key batch tokens are sealed with, derived from the token HMAC key (every node has it)."""
    return hmac.new(token_hmac_key, b"kms-service/batch-token-key", hashlib.sha256).digest()


_BATCH_AAD = b"kms-service/batch-token/v1"


def seal_batch_token(key: bytes, info: TokenInfo, namespace_id: str = "") -> str:
    """A batch token: its values (policies, namespace and its id, times, parent, display name, metadata)
    sealed."""
    body = {
        "i": namespace_id,
        "p": list(info.policies),
        "n": info.namespace,
        "c": int(info.created_at.timestamp()),
        "e": int(info.expires_at.timestamp()) if info.expires_at else None,
        "a": info.parent_accessor,
        "d": info.display_name,
        "t": info.ttl,
        "m": dict(info.meta) if info.meta else None,
    }
    nonce = secrets.token_bytes(12)
    sealed = AESGCM(key).encrypt(nonce, json.dumps(body, separators=(",", ":")).encode(), _BATCH_AAD)
    return BATCH_TOKEN_PREFIX + base64.urlsafe_b64encode(nonce + sealed).rstrip(b"=").decode("ascii")


def open_batch_token(key: bytes, token: str) -> tuple[TokenInfo, str] | None:
    """The values a batch token carries and its namespace's id, or None (not this cluster's, or altered)."""
    if not is_batch_token(token):
        return None
    raw = token[len(BATCH_TOKEN_PREFIX) :]
    try:
        blob = base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4))
        body = json.loads(AESGCM(key).decrypt(blob[:12], blob[12:], _BATCH_AAD))
    except (ValueError, InvalidTag):
        return None
    info = TokenInfo(
        "",
        tuple(body["p"]),
        body["d"],
        datetime.fromtimestamp(body["c"], UTC),
        datetime.fromtimestamp(body["e"], UTC) if body["e"] is not None else None,
        parent_accessor=body["a"],
        ttl=body["t"],
        meta=body["m"],
        namespace=body["n"],
        token_type=BATCH,
    )
    return info, body["i"]


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
    # Vault's periodic tokens: each renewal sets the TTL to this many seconds (0: not periodic).
    period: int = 0
    # "service" (stored, with an accessor) or "batch" (sealed in the token itself, stored nowhere).
    token_type: str = SERVICE

    @property
    def batch(self) -> bool:
        return self.token_type == BATCH

    def expired(self, now: datetime) -> bool:
        return self.expires_at is not None and self.expires_at <= now


def go_strings(values: Iterable[str]) -> str:
    """A list of names as Vault's messages print one (Go's %q of a []string): ["a" "b"]."""
    return "[" + " ".join(json.dumps(value) for value in values) + "]"


ROLE_TOKEN_TYPES = ("service", "batch", "default-service", "default-batch")


@dataclass(frozen=True)
class TokenRole:
    """Vault's token role (auth/token/roles/<name>): what auth/token/create/<name> grants. Durations in
    seconds; token_type one of ROLE_TOKEN_TYPES ("default-*": the request's ``type`` may choose)."""

    allowed_policies: tuple[str, ...] = ()
    disallowed_policies: tuple[str, ...] = ()
    orphan: bool = False
    renewable: bool = True
    path_suffix: str = ""
    token_period: int = 0
    token_explicit_max_ttl: int = 0
    token_type: str = "default-service"  # noqa: S105 (a token type, not a secret)

    def to_json(self) -> str:
        return json.dumps(
            {
                "allowed_policies": list(self.allowed_policies),
                "disallowed_policies": list(self.disallowed_policies),
                "orphan": self.orphan,
                "renewable": self.renewable,
                "path_suffix": self.path_suffix,
                "token_period": self.token_period,
                "token_explicit_max_ttl": self.token_explicit_max_ttl,
                "token_type": self.token_type,
            },
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, text: str) -> TokenRole:
        values = json.loads(text)
        values["allowed_policies"] = tuple(values["allowed_policies"])
        values["disallowed_policies"] = tuple(values["disallowed_policies"])
        return cls(**values)

    def token_type_for(self, asked: str | None) -> str:
        """The type a token made through this role gets (Vault's words when the role forbids it)."""
        if self.token_type in (SERVICE, BATCH):
            if asked and asked != self.token_type:
                raise InvalidRequest(f"token type {asked!r} not allowed by role; it creates {self.token_type} tokens")
            chosen = self.token_type
        else:
            chosen = asked or self.token_type.removeprefix("default-")
        return chosen

    def policies_for(self, asked: tuple[str, ...], parent: tuple[str, ...], root: bool) -> tuple[str, ...]:
        """Vault's rule: with allowed_policies, the token's policies (default: all of them) must be among them;
        without, a subset of the parent's (root: any), never a disallowed one."""
        if self.allowed_policies:
            policies = tuple(sorted(set(asked) or set(self.allowed_policies) - set(self.disallowed_policies)))
            if not set(policies) <= set(self.allowed_policies):
                raise InvalidRequest(
                    f"token policies ({go_strings(policies)}) must be subset of the role's allowed policies "
                    f"({go_strings(sorted(self.allowed_policies))}) or glob policies ([])"
                )
        else:
            policies = tuple(sorted(set(asked or parent)))
            if not root and not set(policies) <= set(parent):
                raise InvalidRequest("child policies must be subset of parent")
        refused = sorted(set(policies) & set(self.disallowed_policies))
        if refused:
            raise InvalidRequest(f"token policy {go_strings(refused)} is disallowed by this role")
        return policies

    def data(self, name: str) -> dict[str, object]:
        """The role as auth/token/roles/<name> reads it (Vault's fields, their older names too)."""
        return {
            "allowed_entity_aliases": None,
            "allowed_policies": list(self.allowed_policies),
            "allowed_policies_glob": [],
            "disallowed_policies": list(self.disallowed_policies),
            "disallowed_policies_glob": [],
            "explicit_max_ttl": self.token_explicit_max_ttl,
            "name": name,
            "orphan": self.orphan,
            "path_suffix": self.path_suffix,
            "period": self.token_period,
            "renewable": self.renewable,
            "token_explicit_max_ttl": self.token_explicit_max_ttl,
            "token_no_default_policy": False,
            "token_period": self.token_period,
            "token_type": self.token_type,
        }
