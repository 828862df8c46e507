"""Mounts: transit engines at paths, each with its own keys (Vault's ``sys/mounts``). No I/O here.

A mount's path is one or more segments (``transit``, ``transit-eu``, ``teams/payments``), stored without
slashes at either end; Vault shows it with one trailing slash. Every key of the services YAML lives in
``transit/``, which always exists and cannot be disabled.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from kms_service.errors import InvalidRequest

DEFAULT_MOUNT = "transit"
MOUNT_TYPES = frozenset({"transit"})
# Vault's own top-level paths; a mount may not take them (nor live under them).
RESERVED = frozenset({"sys", "auth", "cubbyhole", "identity", "audit"})
MAX_DEPTH = 4
_SEGMENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
# Vault's mount config fields that tune may set; this server keeps them for clients, nothing leases.
DEFAULT_LEASE_TTL = 2764800  # Vault's system default (768 h), what tune reports for an untuned mount


@dataclass(frozen=True)
class Mount:
    id: int
    path: str
    type: str
    description: str
    accessor: str
    uuid: str
    created_at: datetime
    config: dict[str, Any] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def segments(self) -> tuple[str, ...]:
        return tuple(self.path.split("/"))

    def key_ref(self, name: str) -> str:
        return key_ref(self.path, name)


def key_ref(mount_path: str, name: str) -> str:
    """The one string that names a key across mounts, bound into its sealed material: the bare name in
    ``transit/`` (so the first release's sealed rows keep their binding), ``<mount>/<name>`` elsewhere. Key names
    never hold a slash, so no two keys share a reference."""
    return name if mount_path == DEFAULT_MOUNT else f"{mount_path}/{name}"


def normalized_path(raw: str) -> str:
    """A mount path as given (``payments/``, ``/teams/a``) → its stored form, or a 400 saying why not."""
    path = raw.strip("/")
    segments = path.split("/") if path else []
    if not segments:
        raise InvalidRequest("missing mount path")
    if segments[0].lower() in RESERVED:
        raise InvalidRequest(f'cannot mount "{path}/"')
    if len(segments) > MAX_DEPTH or not all(_SEGMENT.fullmatch(s) for s in segments):
        raise InvalidRequest(
            f"invalid mount path {path!r}: up to {MAX_DEPTH} segments of letters, digits, '.', '_' and '-'"
        )
    return path


def conflict(existing: list[str], path: str) -> str | None:
    """The existing mount that ``path`` would overlap (the same, inside it, or holding it), as Vault
    refuses: ``transit-eu`` next to ``transit`` is fine, ``teams`` over ``teams/a`` is not."""
    for other in existing:
        if other == path or path.startswith(other + "/") or other.startswith(path + "/"):
            return other
    return None


def config_view(mount: Mount) -> dict[str, Any]:
    """The ``config`` block Vault shows for a mount (the lease TTLs are 0 until tuned: the system's)."""
    return {
        "default_lease_ttl": int(mount.config.get("default_lease_ttl", 0)),
        "force_no_cache": False,
        "max_lease_ttl": int(mount.config.get("max_lease_ttl", 0)),
    }
