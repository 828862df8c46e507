"""The one table: every path the server answers, by family (Vault's ``backend.go`` ``Paths`` list).

A new endpoint is a handler plus a ``Path`` in its family's ``PATHS``; a new family is one more line here.
The router is built from this table, and the OpenAPI document (GET /v1/sys/openapi) is generated from it.
"""

from __future__ import annotations

from kms_service.web import (
    auth_token,
    sys_audit,
    sys_info,
    sys_metrics,
    sys_mounts,
    sys_namespaces,
    sys_operator,
    sys_overview,
    sys_wrapping,
    system,
    transit,
    transit_import,
    transit_key_admin,
    transit_tools,
)
from kms_service.web.framework import Path

TABLE: tuple[Path, ...] = (
    *system.PATHS,
    *sys_operator.PATHS,
    *sys_info.PATHS,
    *sys_audit.PATHS,
    *sys_mounts.PATHS,
    *sys_namespaces.PATHS,
    *sys_metrics.PATHS,
    *sys_wrapping.PATHS,
    *sys_overview.PATHS,
    *auth_token.PATHS,
    *transit.PATHS,
    *transit_key_admin.PATHS,
    *transit_tools.PATHS,
    *transit_import.PATHS,
)
