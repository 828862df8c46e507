"""/v1/sys/*: what Vault's clients ask of a server before they use it: whether it is initialized (``bao operator
init -status``, hvac ``sys.is_initialized()``), its auth methods (``bao auth list``; the token method is the
only one), the mounts a token may see (Vault's web UI and ``bao kv``-style clients) and the versions it has
run (``sys/version-history``)."""

from __future__ import annotations

import hashlib
import uuid
from typing import Any

from kms_service import VAULT_API_VERSION
from kms_service.errors import InvalidRequest, PermissionDenied
from kms_service.tokens import token_from_headers
from kms_service.web.framework import Call, Field, Operation, Path
from kms_service.web.framework import FieldType as T
from kms_service.web.replies import Reply
from kms_service.web.sys_mounts import mount_entry, system_mount_entry

TOKEN_AUTH_PATH = "token/"  # noqa: S105 (a mount path, not a secret)
# A token method's settings as Vault's ``auth/token`` tune shows them: nothing here leases, and tokens are
# service tokens unless asked otherwise.
TOKEN_AUTH_TYPE = "default-service"  # noqa: S105 (a token kind, not a secret)


async def read_init(call: Call, args: dict[str, Any]) -> Reply:
    # The master key is loaded before the server listens: a running server is always initialized.
    return Reply({"initialized": True}, bare=True)


async def write_init(call: Call, args: dict[str, Any]) -> None:
    # Vault's own answer to a second ``operator init``: keys are made by ``kms-service``, not over HTTP.
    raise InvalidRequest("Vault is already initialized")


def _handles(cluster_id: str, name: str) -> tuple[str, str]:
    """An accessor and a uuid derived from the cluster id, so they are the same on every node and every start."""
    digest = hashlib.sha256(f"{name}/{cluster_id}".encode()).hexdigest()
    return digest[:8], str(uuid.UUID(digest[:32]))


def _token_auth_entry(cluster_id: str) -> dict[str, Any]:
    accessor, handle = _handles(cluster_id, "auth/token")
    return {
        "accessor": f"auth_token_{accessor}",
        "config": {"default_lease_ttl": 0, "force_no_cache": False, "max_lease_ttl": 0, "token_type": TOKEN_AUTH_TYPE},
        "description": "token based credentials",
        "external_entropy_access": False,
        "local": False,
        "options": None,
        "plugin_version": "",
        "running_plugin_version": f"v{VAULT_API_VERSION}+builtin.vault",
        "running_sha256": "",
        "seal_wrap": False,
        "type": "token",
        "uuid": handle,
    }


async def list_auth(call: Call, args: dict[str, Any]) -> Reply:
    # Vault answers with the methods both in data and at the top level (older clients read them there).
    return Reply({TOKEN_AUTH_PATH: _token_auth_entry(call.kms.cluster_id)}, top_level=True)


def _auth_path(call: Call) -> None:
    if call.params["path"].strip("/") != TOKEN_AUTH_PATH.rstrip("/"):
        raise InvalidRequest(f"no auth mount at {call.params['path'].strip('/')}/")


async def read_auth_tune(call: Call, args: dict[str, Any]) -> Reply:
    _auth_path(call)
    # The server's settings (--default-token-ttl, --max-token-ttl): what auth/token/create applies.
    tune = {
        "default_lease_ttl": call.kms.tokens.default_ttl,
        "description": "token based credentials",
        "force_no_cache": False,
        "max_lease_ttl": call.kms.tokens.max_ttl,
        "token_type": TOKEN_AUTH_TYPE,
    }
    return Reply(tune, top_level=True)


async def write_auth_tune(call: Call, args: dict[str, Any]) -> None:
    _auth_path(call)
    # Refused, not ignored: token lifetimes are the server's settings (--default-token-ttl, --max-token-ttl).
    raise InvalidRequest("the token auth method is tuned with the server's settings, not over HTTP")


async def read_auth_method(call: Call, args: dict[str, Any]) -> Reply:
    _auth_path(call)
    return Reply(_token_auth_entry(call.kms.cluster_id), top_level=True)


async def ui_mounts(call: Call, args: dict[str, Any]) -> Reply:
    """The mounts the caller's token reaches (Vault's ``sys/internal/ui/mounts``): none without a valid token."""
    principal = await call.kms.tokens.authenticate(token_from_headers(call.request.headers))
    secret: dict[str, Any] = {}
    auth: dict[str, Any] = {}
    if principal is not None:
        acl = principal.acl
        for mount in await call.kms.mounts.list(call.namespace):
            path = mount.path.removeprefix(call.namespace)
            if acl.reaches_under(f"{path}/"):
                secret[f"{path}/"] = mount_entry(mount)
        if acl.reaches_under("sys/"):
            secret["sys/"] = system_mount_entry(call.kms.cluster_id)
        if acl.reaches_under("auth/token/"):
            auth[TOKEN_AUTH_PATH] = _token_auth_entry(call.kms.cluster_id)
    return Reply({"secret": secret, "auth": auth})


async def ui_mount(call: Call, args: dict[str, Any]) -> Reply:
    principal = await call.kms.tokens.authenticate(token_from_headers(call.request.headers))
    path = call.params["path"].strip("/")
    mounts = {mount.path.removeprefix(call.namespace): mount for mount in await call.kms.mounts.list(call.namespace)}
    if principal is None or path not in mounts or not principal.acl.reaches_under(f"{path}/"):
        # Vault's words, whether the mount is missing or hidden from this token.
        raise PermissionDenied(
            f'preflight capability check returned 403, please ensure client\'s policies grant access to path "{path}/"'
        )
    return Reply({**mount_entry(mounts[path]), "path": f"{path}/"})


async def version_history(call: Call, args: dict[str, Any]) -> dict[str, Any]:
    # When this node started with this version: each node knows only its own start.
    installed = call.kms.started_at.strftime("%Y-%m-%dT%H:%M:%SZ")
    # Vault names the build's date build_date, OpenBao commit_date: neither is recorded in this package.
    info = {"build_date": "", "commit_date": "", "previous_version": None, "timestamp_installed": installed}
    return {"keys": [VAULT_API_VERSION], "key_info": {VAULT_API_VERSION: info}}


_PATH_FIELD = Field("path", T.STRING, "The auth method's path: token.")

PATHS = (
    Path(
        "sys/init",
        "Whether the server is initialized: always, once it runs (its master key is made by the command line).",
        fields=(),
        operations={"GET": Operation(read_init, bare=True), "POST": Operation(write_init, body=False)},
        authenticated=False,
    ),
    Path(
        "sys/auth",
        "The auth methods: the token method, the only one.",
        fields=(),
        operations={"GET": Operation(list_auth)},
    ),
    Path(
        "sys/auth/:path",
        "One auth method (token).",
        fields=(_PATH_FIELD,),
        operations={"GET": Operation(read_auth_method)},
    ),
    Path(
        "sys/auth/:path/tune",
        "The token method's settings (read only: they are the server's settings).",
        fields=(
            _PATH_FIELD,
            Field("default_lease_ttl", T.DURATION, "Refused: a server setting."),
            Field("max_lease_ttl", T.DURATION, "Refused: a server setting."),
        ),
        operations={"GET": Operation(read_auth_tune), "POST": Operation(write_auth_tune)},
    ),
    Path(
        "sys/internal/ui/mounts",
        "The mounts the caller's token can reach (none without a token), as Vault's web interface asks.",
        fields=(),
        operations={"GET": Operation(ui_mounts)},
        authenticated=False,
    ),
    Path(
        "sys/internal/ui/mounts/*path",
        "One mount, if the caller's token can reach it.",
        fields=(Field("path", T.STRING, "The mount's path."),),
        operations={"GET": Operation(ui_mount)},
        authenticated=False,
    ),
    Path(
        "sys/version-history",
        "The versions this server has run (the Vault API level it implements).",
        fields=(),
        operations={"LIST": Operation(version_history)},
    ),
)
