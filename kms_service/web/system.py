"""/v1/sys/health and the API's own description (/v1/sys/openapi)."""

from __future__ import annotations

import time
from typing import Any

from kms_service import __version__
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


async def openapi_document(call: Call, args: dict[str, Any]) -> dict[str, Any]:
    return openapi.document(call.router.paths)


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
