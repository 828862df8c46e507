"""/v1/sys/health and the API's own description (/v1/sys/openapi)."""

from __future__ import annotations

import time
from typing import Any

from kms_service import VAULT_API_VERSION, __version__
from kms_service.errors import InvalidRequest
from kms_service.outage import DatabaseState
from kms_service.web import openapi
from kms_service.web.framework import Call, Field, Operation, Path
from kms_service.web.framework import FieldType as T
from kms_service.web.replies import Reply

# Vault's codes: 200 active; 429 standby (up, but not taking writes); 503 sealed (serving nothing). A node
# whose database is down but which still answers from memory is like a standby; past --stale-while-down it
# serves nothing, like a sealed one.
STATUS_FOR_STATE = {DatabaseState.AVAILABLE: 200, DatabaseState.STALE: 429, DatabaseState.DOWN: 503}


def _status_code(code: int) -> None:
    if not 200 <= code <= 599:
        raise InvalidRequest("standbycode must be an HTTP status code from 200 to 599")


async def health(call: Call, args: dict[str, Any]) -> Reply:
    state = call.kms.watch.state()
    status = STATUS_FOR_STATE[state]
    if state is DatabaseState.STALE:
        status = 200 if args["standbyok"] else args["standbycode"] or status
    body = _health_body(call)
    body["database"] = state.value
    stale_until = call.kms.watch.outage.stale_until()
    if stale_until is not None:
        body["database_down_seconds"] = round(time.monotonic() - call.kms.watch.outage.down_since, 1)
        body["serving_from_cache_until"] = int(time.time() + max(0.0, stale_until - time.monotonic()))
    return Reply(body, status=status, bare=True)


def _health_body(call: Call) -> dict[str, Any]:
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
        "version": VAULT_API_VERSION,
        "kms_service_version": __version__,
        # The services YAML's service (``vault-kms:1.12``): what the platform asked for.
        "type": service.type if service else "",
        "service_version": service.version if service else "",
        "cluster_name": name,
        "cluster_id": call.kms.cluster_id,
    }


async def openapi_document(call: Call, args: dict[str, Any]) -> dict[str, Any]:
    return openapi.document(call.router.paths)


_OPENAPI = Operation(openapi_document, bare=True)

PATHS = (
    Path(
        "sys/health",
        "Health (the bare object, not Vault's envelope): 200 when the database is available, 429 while it is "
        "down and this node serves from memory (--stale-while-down), 503 once that window has passed; "
        "'database' says which.",
        fields=(
            Field(
                "standbyok",
                T.BOOL,
                "200 instead of 429 while the database is down and this node serves from "
                "memory (Vault's standby code).",
            ),
            Field("standbycode", T.INT, "The status for that state (default 429).", check=_status_code),
        ),
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
