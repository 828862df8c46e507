"""/v1/sys/health, /v1/auth/token/lookup-self and the API's own description (/v1/sys/openapi)."""

from __future__ import annotations

import time
from datetime import UTC
from typing import Any

from kms_service import __version__
from kms_service.service import utcnow
from kms_service.web import openapi
from kms_service.web.framework import Call, Operation, Path


async def health(call: Call, args: dict[str, Any]) -> dict[str, Any]:
    service = call.kms.service
    name = service.name if service else "kms-service"
    return {
        "initialized": True,
        "sealed": False,
        "standby": False,
        "performance_standby": False,
        "replication_performance_mode": "disabled",
        "replication_dr_mode": "disabled",
        "server_time_utc": int(time.time()),
        "version": service.version if service else "",
        "type": service.type if service else "",
        "kms_service_version": __version__,
        "cluster_name": name,
        "cluster_id": call.kms.cluster_id,
    }


def _rfc3339(value) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


async def lookup_self(call: Call, args: dict[str, Any]) -> dict[str, Any]:
    assert call.principal is not None
    info = call.principal.info
    now = utcnow()
    ttl = max(0, int((info.expires_at - now).total_seconds())) if info.expires_at else 0
    creation_ttl = int((info.expires_at - info.created_at).total_seconds()) if info.expires_at else 0
    return {
        "accessor": info.accessor,
        "creation_time": int(info.created_at.timestamp()),
        "creation_ttl": creation_ttl,
        "display_name": info.display_name,
        "entity_id": "",
        "expire_time": _rfc3339(info.expires_at) if info.expires_at else None,
        "explicit_max_ttl": 0,
        "id": call.principal.token,
        "issue_time": _rfc3339(info.created_at),
        "meta": None,
        "num_uses": 0,
        "orphan": True,
        "path": "auth/token/create",
        "policies": list(info.policies),
        "renewable": False,
        "ttl": ttl,
        "type": "service",
    }


async def openapi_document(call: Call, args: dict[str, Any]) -> dict[str, Any]:
    return openapi.document(call.router.paths)


_LOOKUP_SELF = Operation(lookup_self, body=False)
_OPENAPI = Operation(openapi_document, bare=True)

PATHS = (
    Path(
        "sys/health",
        "Health: initialised, unsealed, active (the bare object, not Vault's envelope).",
        fields=(),
        operations={"GET": Operation(health, bare=True), "HEAD": Operation(health, bare=True)},
        authenticated=False,
    ),
    Path(
        "auth/token/lookup-self",
        "The calling token: policies, accessor, ttl and expiry.",
        fields=(),
        operations={"GET": _LOOKUP_SELF, "POST": _LOOKUP_SELF},
        check_acl=False,
    ),
    Path(
        "sys/openapi",
        "This API, as an OpenAPI 3 document generated from the path table.",
        fields=(),
        operations={"GET": _OPENAPI},
        authenticated=False,
    ),
    Path(
        "sys/internal/specs/openapi",
        "The same OpenAPI document, at Vault's path.",
        fields=(),
        operations={"GET": _OPENAPI},
        authenticated=False,
    ),
)
