"""/v1/sys/audit and /v1/sys/audit-hash/:path: Vault's audit device API, over the devices ``serve`` was
started with (``--audit-file`` is device ``file/``, ``--audit-db`` is ``db/``). ``bao audit list`` and
``bao write sys/audit-hash/file input=...`` work; devices are enabled by flags, not over HTTP."""

from __future__ import annotations

from typing import Any

from kms_service.acl import Capability
from kms_service.errors import InvalidRequest
from kms_service.service.audit_log import FileSink
from kms_service.web.framework import Call, Field, Operation, Path
from kms_service.web.framework import FieldType as T
from kms_service.web.request_audit import AUDIT_KEY


def _devices(call: Call) -> dict[str, Any]:
    audit = call.request.app.get(AUDIT_KEY)
    devices: dict[str, Any] = {}
    for sink in audit.sinks if audit is not None else ():
        options = {"file_path": str(sink.path)} if isinstance(sink, FileSink) else {"table": "audit_records"}
        devices[f"{sink.name}/"] = {
            "type": sink.name,
            "path": f"{sink.name}/",
            "description": "",
            "options": options,
            "local": False,
        }
    return devices


async def list_devices(call: Call, args: dict[str, Any]) -> dict[str, Any]:
    return _devices(call)


async def change_device(call: Call, args: dict[str, Any]) -> None:
    # `bao audit enable file file_path=...` / `bao audit disable`: say where devices are chosen instead.
    raise InvalidRequest(
        "audit devices are chosen when the server starts: serve --audit-file PATH (device file/) and "
        "--audit-db (device db/)"
    )


async def audit_hash(call: Call, args: dict[str, Any]) -> dict[str, Any]:
    path = call.params["path"].strip("/") + "/"
    if path not in _devices(call):
        raise InvalidRequest("unknown audit backend")  # Vault's text
    if args["input"] is None:
        raise InvalidRequest("the 'input' parameter is required")
    return {"hash": call.kms.audit_keys.hash(args["input"])}


PATHS = (
    Path(
        "sys/audit",
        "The audit devices this server writes (serve --audit-file: file/, --audit-db: db/).",
        fields=(),
        operations={"GET": Operation(list_devices, capability=Capability.SUDO)},
    ),
    Path(
        "sys/audit/:path",
        "Enabling or disabling an audit device over HTTP is refused: devices are serve's flags.",
        fields=(
            Field("path", T.STRING, "The audit device's path."),
            Field("type", T.STRING, "Vault's device type (file, ...)."),
            Field("description", T.STRING, "Vault's device description."),
            Field("options", T.MAP, "Vault's device options (file_path, ...)."),
            Field("local", T.BOOL, "Vault's replication flag."),
        ),
        operations={
            "POST": Operation(change_device, capability=Capability.SUDO),
            "DELETE": Operation(change_device, capability=Capability.SUDO),
        },
    ),
    Path(
        "sys/audit-hash/:path",
        "A value as the audit device at 'path' records it (hmac-sha256:...), to search the log for it.",
        fields=(
            Field("path", T.STRING, "The audit device: file or db."),
            Field("input", T.STRING, "The value to hash (a plaintext as sent: its base64)."),
        ),
        operations={"POST": Operation(audit_hash)},
    ),
)
