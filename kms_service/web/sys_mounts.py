"""/v1/sys/mounts: the transit engines of this server (``bao secrets enable|list|disable|tune``, hvac's
``sys.*_secrets_engine``). Each mount holds its own keys; policies address them by path, as in Vault."""

from __future__ import annotations

import hashlib
import uuid
from typing import Any

from kms_service import __version__
from kms_service.durations import parse_seconds
from kms_service.errors import InvalidRequest
from kms_service.mounts import DEFAULT_LEASE_TTL, Mount, config_view
from kms_service.web.framework import Call, Field, Operation, Path
from kms_service.web.framework import FieldType as T
from kms_service.web.replies import Reply

RUNNING_VERSION = f"v{__version__}+builtin.kms-service"


def _entry(
    accessor: str, config: dict[str, Any], description: str, options: Any, type_: str, uuid_: str
) -> dict[str, Any]:
    """One mount as Vault lists it: what differs between mounts, and the fields that never do here."""
    return {
        "accessor": accessor,
        "config": config,
        "deprecation_status": "supported",
        "description": description,
        "external_entropy_access": False,
        "local": False,
        "options": options,
        "plugin_version": "",
        "running_plugin_version": RUNNING_VERSION,
        "running_sha256": "",
        "seal_wrap": False,
        "type": type_,
        "uuid": uuid_,
    }


def mount_entry(mount: Mount) -> dict[str, Any]:
    return _entry(mount.accessor, config_view(mount), mount.description, mount.options, mount.type, mount.uuid)


def system_mount_entry(cluster_id: str) -> dict[str, Any]:
    """sys/ is a mount in Vault's listing too; its handles are derived from the cluster id, so they are the
    same on every node and every start."""
    digest = hashlib.sha256(f"sys/{cluster_id}".encode()).hexdigest()
    return _entry(
        f"system_{digest[:8]}",
        {"default_lease_ttl": 0, "force_no_cache": False, "max_lease_ttl": 0},
        "system endpoints used for control, policy and debugging",
        None,
        "system",
        str(uuid.UUID(digest[:32])),
    )


async def list_mounts(call: Call, args: dict[str, Any]) -> Reply:
    mounts = {
        f"{mount.path.removeprefix(call.namespace)}/": mount_entry(mount)
        for mount in await call.kms.mounts.list(call.namespace)
    }
    mounts["sys/"] = system_mount_entry(call.kms.cluster_id)
    # Vault answers with the mounts both in data and at the top level (older clients read them there).
    return Reply(mounts, top_level=True)


async def read_mount(call: Call, args: dict[str, Any]) -> Reply:
    return Reply(mount_entry(await call.kms.mounts.read(call.params["path"], call.namespace)), top_level=True)


def _ttl(name: str, value: Any) -> int | None:
    if value is None or value == "":
        return None
    if value == "system":
        return 0
    try:
        return parse_seconds(value)
    except ValueError as exc:
        raise InvalidRequest(f"invalid {name}: {exc}") from None


def _config(raw: Any) -> dict[str, Any]:
    """The lease TTLs of a mount's ``config`` (the rest of Vault's config block has no meaning here)."""
    config = {}
    for name in ("default_lease_ttl", "max_lease_ttl"):
        value = _ttl(name, raw.get(name))
        if value is not None:
            config[name] = value
    return config


async def enable_mount(call: Call, args: dict[str, Any]) -> None:
    options = {str(k): str(v) for k, v in (args["options"] or {}).items()}
    await call.kms.mounts.enable(
        call.params["path"],
        args["type"],
        args["description"] or "",
        _config(args["config"] or {}),
        options,
        call.namespace,
    )


async def disable_mount(call: Call, args: dict[str, Any]) -> None:
    await call.kms.mounts.disable(call.params["path"], bool(args["force"]), call.namespace)


def _tune_view(mount: Mount) -> dict[str, Any]:
    config = config_view(mount)
    return {
        "default_lease_ttl": config["default_lease_ttl"] or DEFAULT_LEASE_TTL,
        "description": mount.description,
        "force_no_cache": False,
        "max_lease_ttl": config["max_lease_ttl"] or DEFAULT_LEASE_TTL,
    }


async def read_tune(call: Call, args: dict[str, Any]) -> Reply:
    return Reply(_tune_view(await call.kms.mounts.read(call.params["path"], call.namespace)), top_level=True)


async def write_tune(call: Call, args: dict[str, Any]) -> None:
    await call.kms.mounts.tune(call.params["path"], args["description"], _config(args), call.namespace)


PATH = Field("path", T.STRING, "The mount's path, e.g. transit-eu or teams/payments (slashes at the ends ignored).")
TTL_DOC = "A duration (seconds or Go's form, e.g. 1h); kept and shown, nothing here leases."

PATHS = (
    Path(
        "sys/mounts",
        "Every mount: the transit engines (each with its own keys) and sys/.",
        fields=(),
        operations={"GET": Operation(list_mounts)},
    ),
    Path(
        "sys/mounts/*path",
        "One transit engine: read it, enable a new one at this path, or disable it.",
        description=(
            "Disabling a mount that holds keys is refused unless force=true, and then only if every key has "
            "deletion_allowed (Vault deletes them all unasked). transit/ holds the services YAML's keys and "
            "cannot be disabled."
        ),
        fields=(
            PATH,
            Field("type", T.STRING, "The engine type; only transit."),
            Field("description", T.STRING, "What the mount is for."),
            Field("config", T.MAP, "default_lease_ttl and max_lease_ttl (kept and shown; nothing leases)."),
            Field("options", T.MAP, "Options as strings (kept and shown)."),
            Field("local", T.BOOL, "Accepted for Vault's clients; every mount is shared by every node."),
            Field("seal_wrap", T.BOOL, "Accepted for Vault's clients; all key material is sealed."),
            Field("external_entropy_access", T.BOOL, "Accepted for Vault's clients."),
            Field("plugin_name", T.STRING, "Accepted for Vault's clients (the engine is built in).", ignored=True),
            Field("plugin_version", T.STRING, "Accepted for Vault's clients.", ignored=True),
            Field("force", T.BOOL, "Disable: delete the mount's keys too (each must allow deletion).", default=False),
        ),
        operations={
            "GET": Operation(read_mount),
            "POST": Operation(enable_mount),
            "DELETE": Operation(disable_mount),
        },
    ),
    Path(
        "sys/mounts/*path/tune",
        "A mount's tunable settings: its description and lease TTLs.",
        fields=(
            PATH,
            Field("description", T.STRING, "What the mount is for."),
            Field("default_lease_ttl", T.DURATION, TTL_DOC),
            Field("max_lease_ttl", T.DURATION, TTL_DOC),
            Field("options", T.MAP, "Accepted for Vault's clients.", ignored=True),
        ),
        operations={"GET": Operation(read_tune), "POST": Operation(write_tune)},
    ),
)
