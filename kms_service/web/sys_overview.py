"""Reads an operator needs beyond the rest of the API (the console's overview, endpoints and audit pages, or
curl): the nodes this node has heard from (Vault's ``sys/ha-status``), the services YAML's endpoints with
their grants (``sys/endpoints``), and the audit sinks' state with their anchors and, on request, the
database sink verified (``sys/audit-status``). Each is an ordinary path of the table, so a token needs a
policy that allows it."""

from __future__ import annotations

import socket
import time
from datetime import UTC, datetime
from typing import Any

from kms_service import __version__
from kms_service.acl import Capability
from kms_service.errors import NotFound
from kms_service.service.audit_log import FileSink, anchors, verify_database
from kms_service.web.framework import Call, Field, Operation, Path
from kms_service.web.framework import FieldType as T
from kms_service.web.request_audit import AUDIT_KEY


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


async def ha_status(call: Call, args: dict[str, Any]) -> dict[str, Any]:
    """Vault's node list. Every node here is active (they share one database); the others are the nodes whose
    changes this node has heard (PostgreSQL's notifications or SQLite's change log), with when it last did.
    A node that has written nothing since this one started is not listed."""
    kms = call.kms
    nodes = [
        {
            "hostname": socket.gethostname(),
            "node_id": kms.node_id,
            "api_address": "",
            "cluster_address": "",
            "active_node": True,
            "this_node": True,
            "last_echo": _iso(time.time()),
            "version": __version__,
        }
    ]
    heard = kms.cluster.heard if kms.cluster is not None else {}
    for node, seen in sorted(heard.items(), key=lambda item: item[1], reverse=True):
        if node != kms.node_id:
            nodes.append(
                {
                    "hostname": "",
                    "node_id": node,
                    "api_address": "",
                    "cluster_address": "",
                    "active_node": True,
                    "this_node": False,
                    "last_echo": _iso(seen),
                    "version": "",
                }
            )
    return {"nodes": nodes}


async def list_endpoints(call: Call, args: dict[str, Any]) -> dict[str, Any]:
    endpoints = await call.kms.policies.endpoints()
    if not endpoints:
        raise NotFound()
    return {
        "keys": [e["endpoint"] for e in endpoints],
        "key_info": {e["endpoint"]: {k: v for k, v in e.items() if k != "endpoint"} for e in endpoints},
    }


async def audit_status(call: Call, args: dict[str, Any]) -> dict[str, Any]:
    audit = call.request.app.get(AUDIT_KEY)
    sinks = []
    for sink in audit.sinks if audit is not None else ():
        sinks.append(
            {
                "path": f"{sink.name}/",
                "type": sink.name,
                "options": {"file_path": str(sink.path)} if isinstance(sink, FileSink) else {"table": "audit_records"},
            }
        )
    body: dict[str, Any] = {
        "enabled": audit is not None,
        "sinks": sinks,
        # The last failure of any sink, until a later record was taken by every sink.
        "last_error": audit.last_error if audit is not None else None,
        "anchors": await anchors(call.kms.db),
    }
    if args["verify"]:
        result = await verify_database(call.kms.db, call.kms.audit_keys)
        body["verification"] = {
            "ok": result.ok,
            "chains": [
                {
                    "id": report.id,
                    "ok": report.ok,
                    "records": report.records,
                    "verified_seq": report.verified_seq,
                    "problem": report.problem,
                    "tail": report.tail,
                }
                for report in result.chains.values()
            ],
            "unreadable_lines": len(result.unreadable),
            "anchored_without_records": result.absent,
        }
    return body


PATHS = (
    Path(
        "sys/ha-status",
        "The nodes: this one, and every node whose changes this node has heard since it started (all are "
        "active: they share one database).",
        fields=(),
        operations={"GET": Operation(ha_status)},
    ),
    Path(
        "sys/endpoints",
        "The services YAML's endpoints: their grants (policy template and key) and newest token's accessor "
        "and expiry (Vault's keys and key_info).",
        fields=(),
        operations={"LIST": Operation(list_endpoints)},
    ),
    Path(
        "sys/audit-status",
        "The audit sinks (serve --audit-file, --audit-db), their last failure, the chains' anchored heads, and "
        "with verify=true the database sink's records checked against them.",
        fields=(Field("verify", T.BOOL, "Verify the database sink's records (reads every record)."),),
        operations={"GET": Operation(audit_status, capability=Capability.SUDO)},
    ),
)
