"""Namespaces (OpenBao's ``sys/namespaces``): isolated tenants, each with its own mounts, keys, policies and
tokens. No I/O here.

A namespace's path is written as Vault writes it, with one trailing slash (``ns1/``, ``ns1/child/``); the
root namespace is ``""``. What lives in a namespace is stored under its full path: a mount of ``ns1/`` is
the mount ``ns1/transit``, a policy document of ``ns1/`` is the policy ``ns1/p1`` (a policy name never
holds a slash), so keys need no namespace of their own (they belong to their mount) and every name stays
unique. A request names its namespace with the ``X-Vault-Namespace`` header, a path prefix
(``/v1/ns1/transit/...``) or both, joined (header first), as in Vault.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime

from kms_service.errors import InvalidRequest
from kms_service.mounts import RESERVED

ROOT = ""
# How deep namespaces nest: a mount's stored path (namespace + mount path) stays short enough for its column.
MAX_DEPTH = 4
_NAME = re.compile(r"[A-Za-z0-9._-]{1,64}", re.ASCII)


@dataclass(frozen=True)
class Namespace:
    path: str  # "ns1/", "ns1/child/"
    id: str  # Vault's short id
    uuid: str
    created_at: datetime
    custom_metadata: dict[str, str] = field(default_factory=dict)

    @property
    def segments(self) -> tuple[str, ...]:
        return segments(self.path)


def segments(path: str) -> tuple[str, ...]:
    return tuple(path.strip("/").split("/")) if path.strip("/") else ()


def joined(parent: str, *names: str) -> str:
    """``parent`` (``""`` or ``ns1/``) and the names below it, as a namespace path."""
    return parent + "".join(f"{name}/" for name in names)


def child_path(parent: str, raw_name: str) -> str:
    """The path of a new namespace ``raw_name`` in ``parent``, or a 400 in OpenBao's words."""
    name = raw_name.strip("/")
    if "/" in name:
        raise InvalidRequest("namespace name cannot contain /")
    if any(c.isspace() for c in name):
        raise InvalidRequest(f'"{name}" contains space characters that cannot be used in a namespace name')
    if not name:
        raise InvalidRequest("namespace path cannot be empty")
    if name.lower() in RESERVED or name.lower() == "root":
        raise InvalidRequest(f'"{name}/" is a reserved path and cannot be used as a namespace name')
    if not _NAME.fullmatch(name) or name in (".", ".."):
        raise InvalidRequest(f"invalid namespace name {name!r}: letters, digits, '.', '_' and '-', at most 64")
    if len(segments(parent)) >= MAX_DEPTH:
        raise InvalidRequest(f"namespaces nest at most {MAX_DEPTH} deep")
    return joined(parent, name)


def header_segments(value: str | None) -> tuple[str, ...] | None:
    """The segments an ``X-Vault-Namespace`` header names (``ns1``, ``/ns1/child/``), or None for one that
    names no namespace that can exist (empty, relative or control-character segments): a 404 as unknown."""
    if value is None:
        return ()
    inner = value.strip().strip("/")
    if not inner:
        return ()
    parts = tuple(inner.split("/"))
    if not all(_NAME.fullmatch(part) and part not in (".", "..") for part in parts):
        return None
    return parts


def within(path: str, namespace: str) -> bool:
    """Whether the namespace ``path`` is ``namespace`` or below it."""
    return path.startswith(namespace)


def relative(path: str, namespace: str) -> str:
    """A stored full path (``ns1/transit``, ``ns1/p1``) as seen from ``namespace`` (``ns1/`` → ``transit``)."""
    assert path.startswith(namespace), (path, namespace)
    return path[len(namespace) :]
