"""What one key version holds: a typed envelope, sealed as a whole under the master key. Pure.

Vault keeps beside each version's primary key an HMAC key (so ``hmac`` works on every key type), the public
key of asymmetric types, and where the material came from. The envelope has room for all of it, and a
``format`` number so it can grow without guessing what old rows mean.
"""

from __future__ import annotations

import base64
import json
import os
from dataclasses import dataclass, field, replace
from typing import Any

HMAC_KEY_SIZE = 32
ENVELOPE_FORMAT = 1

# Rows written before the envelope existed hold only the sealed primary key (see upgrade_legacy below).
LEGACY_FORMAT = 0


class Origin:
    """Where a version's primary key came from (Vault's ``imported_key``; derived material later)."""

    GENERATED = "generated"
    IMPORTED = "imported"
    # Upgraded from a pre-envelope row: its HMAC key was created at upgrade time.
    UPGRADED = "upgraded"


@dataclass(frozen=True)
class KeyMaterial:
    """One version's secrets and public parts. ``key`` is symmetric key bytes or a PKCS#8 DER private key."""

    # Empty for a version imported from a public key only.
    key: bytes = field(repr=False)
    hmac_key: bytes = field(repr=False)
    # DER SubjectPublicKeyInfo for asymmetric types; None for symmetric ones.
    public_key: bytes | None = None
    origin: str = Origin.GENERATED
    # Type-specific extras that are not secret-shaped enough for their own field (e.g. a certificate chain).
    extra: dict[str, str] = field(default_factory=dict)

    @classmethod
    def new(cls, key: bytes, public_key: bytes | None = None, origin: str = Origin.GENERATED) -> KeyMaterial:
        return cls(key=key, hmac_key=os.urandom(HMAC_KEY_SIZE), public_key=public_key, origin=origin)

    @property
    def has_private_key(self) -> bool:
        """False for a version imported from a public key only (Vault's ``IsPrivateKeyMissing``)."""
        return bool(self.key)

    @classmethod
    def upgrade_legacy(cls, raw_key: bytes, public_key: bytes | None) -> KeyMaterial:
        """A pre-envelope row's key, given a fresh HMAC key (it never had one, so no HMAC can depend on it)."""
        return replace(cls.new(raw_key, public_key), origin=Origin.UPGRADED)

    def to_bytes(self) -> bytes:
        document: dict[str, Any] = {
            "format": ENVELOPE_FORMAT,
            "key": _b64(self.key),
            "hmac_key": _b64(self.hmac_key),
            "origin": self.origin,
        }
        if self.public_key is not None:
            document["public_key"] = _b64(self.public_key)
        if self.extra:
            document["extra"] = dict(self.extra)
        return json.dumps(document, separators=(",", ":"), sort_keys=True).encode("ascii")

    @classmethod
    def from_bytes(cls, data: bytes) -> KeyMaterial:
        document = json.loads(data)
        if not isinstance(document, dict) or document.get("format") != ENVELOPE_FORMAT:
            raise ValueError("unknown key material envelope format")
        public_key = document.get("public_key")
        return cls(
            key=base64.b64decode(document["key"], validate=True),
            hmac_key=base64.b64decode(document["hmac_key"], validate=True),
            public_key=None if public_key is None else base64.b64decode(public_key, validate=True),
            origin=str(document.get("origin", Origin.GENERATED)),
            extra=dict(document.get("extra", {})),
        )


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")
