"""/v1/sys/*: seal status and leader (unauthenticated, as in Vault), ACL policy documents, capabilities.

``bao status``, ``bao policy write|read|list|delete`` and ``bao token capabilities`` land here.
"""

from __future__ import annotations

from typing import Any

from kms_service import VAULT_API_VERSION, __version__
from kms_service.acl import Capability
from kms_service.errors import InvalidRequest, NotFound, PermissionDenied
from kms_service.policy_documents import capability_names
from kms_service.service import Principal
from kms_service.service.policies import canonical_name
from kms_service.tokens import looks_like_token
from kms_service.web.framework import Call, Field, Operation, Path
from kms_service.web.framework import FieldType as T
from kms_service.web.replies import Reply


async def seal_status(call: Call, args: dict[str, Any]) -> dict[str, Any]:
    """Never sealed while it runs: the master key is loaded at start or the server does not start."""
    service = call.kms.service
    return {
        "type": "shamir",
        "initialized": True,
        "sealed": False,
        "t": 1,
        "n": 1,
        "progress": 0,
        "nonce": "",
        "recovery_seal": False,
        "version": VAULT_API_VERSION,
        "kms_service_version": __version__,
        "migration": False,
        "cluster_name": service.name if service else "kms-service",
        "cluster_id": call.kms.cluster_id,
        "storage_type": call.kms.engine.dialect.name,
    }


async def leader(call: Call, args: dict[str, Any]) -> dict[str, Any]:
    # Every node is active (several may share one database); there is no leader to forward to.
    return {"ha_enabled": False}


async def list_policies(call: Call, args: dict[str, Any]) -> dict[str, Any]:
    return {"keys": await call.kms.policies.names(call.namespace)}


async def read_policy(call: Call, args: dict[str, Any]) -> dict[str, Any]:
    document = await call.kms.policies.read(call.params["name"], call.namespace)
    if document is None:
        raise NotFound()
    return {"name": canonical_name(call.params["name"]), "policy": document}


async def _allowed_as_stored(call: Call, capability: Capability | None = None) -> None:
    """A policy named with capitals is stored lowercased: the token must also be allowed at the name that
    changes, or a rule denying ``.../default`` would be passed by writing ``.../DEFAULT``."""
    name = call.params["name"]
    stored = canonical_name(name)
    if stored == name or call.principal is None or call.principal.acl.root:
        return
    path = call.policy_path
    if not path.endswith(name):
        raise PermissionDenied()
    path = path[: len(path) - len(name)] + stored
    if capability is None:  # a write: Vault's create or update, by whether the stored name exists
        exists = await call.kms.policies.read(stored, call.namespace) is not None
        capability = Capability.UPDATE if exists else Capability.CREATE
    if not call.principal.acl.allows(path, capability):
        raise PermissionDenied()


async def write_policy(call: Call, args: dict[str, Any]) -> None:
    if not args["policy"]:
        raise InvalidRequest("'policy' parameter not supplied or empty")
    await _allowed_as_stored(call)
    await call.kms.policies.write(call.params["name"], args["policy"], call.namespace)


async def delete_policy(call: Call, args: dict[str, Any]) -> None:
    await _allowed_as_stored(call, Capability.DELETE)
    await call.kms.policies.delete(call.params["name"], call.namespace)


async def list_policies_legacy(call: Call, args: dict[str, Any]) -> Reply:
    names = await call.kms.policies.names(call.namespace)
    return Reply({"keys": names, "policies": names}, top_level=True)


async def read_policy_legacy(call: Call, args: dict[str, Any]) -> Reply:
    current = await read_policy(call, args)
    return Reply({"name": current["name"], "rules": current["policy"]}, top_level=True)


async def write_policy_legacy(call: Call, args: dict[str, Any]) -> None:
    if not args["policy"] and args["rules"]:
        call.add_warning("'rules' is deprecated, please use 'policy' instead")
        args = {**args, "policy": args["rules"]}
    await write_policy(call, args)


def _paths(args: dict[str, Any]) -> list[str]:
    paths = list(args["paths"] or [])
    if args["path"]:
        paths.append(args["path"])
    if not paths:
        raise InvalidRequest("paths must be supplied")  # Vault's words
    if not all(isinstance(p, str) and p for p in paths):
        raise InvalidRequest("missing path")
    return paths


def _capabilities(principal: Principal, paths: list[str], namespace: str = "") -> Reply:
    """The token's capabilities on ``paths`` of the request's namespace (its policies name them relative to
    the token's own namespace). Each path is answered under the name it was asked by; it is read without a
    leading '/', and a trailing '/' is kept (``transit/keys/`` is where keys are listed), as in Vault."""
    acl = principal.acl
    prefix = namespace.removeprefix(principal.info.namespace)
    result: dict[str, Any] = {
        path: capability_names(acl.capabilities(prefix + path.lstrip("/")), acl.root) for path in paths
    }
    if len(result) == 1:  # Vault's older field, for one path only
        result["capabilities"] = next(iter(result.values()))
    return Reply(result, top_level=True)


async def capabilities_self(call: Call, args: dict[str, Any]) -> Reply:
    assert call.principal is not None
    return _capabilities(call.principal, _paths(args), call.namespace)


async def capabilities(call: Call, args: dict[str, Any]) -> Reply:
    token = args["token"] or ""
    principal = await call.kms.tokens.authenticate(token) if looks_like_token(token) else None
    if principal is None or not call.namespace.startswith(principal.info.namespace):
        raise InvalidRequest("invalid token")
    return _capabilities(principal, _paths(args), call.namespace)


async def capabilities_accessor(call: Call, args: dict[str, Any]) -> Reply:
    accessor = args["accessor"] or ""
    if not accessor:
        raise InvalidRequest("missing accessor")
    paths = _paths(args)
    principal = await call.kms.tokens.principal_by_accessor(accessor)
    # Only the request namespace's own tokens: a child namespace's admin learns nothing of a parent's.
    if principal is None or principal.info.namespace != call.namespace:
        raise InvalidRequest("invalid accessor")
    return _capabilities(principal, paths, call.namespace)


NAME = Field("name", T.STRING, "The policy's name.")
PATHS_FIELDS = (
    Field("paths", T.LIST, "The paths to report capabilities for."),
    Field("path", T.STRING, "One path (Vault's older form)."),
)

PATHS = (
    Path(
        "sys/seal-status",
        "Seal status: never sealed while the server runs (unauthenticated, as in Vault).",
        fields=(),
        operations={"GET": Operation(seal_status, bare=True)},
        authenticated=False,
    ),
    Path(
        "sys/leader",
        "Leadership: every node is active, so there is none (unauthenticated, as in Vault).",
        fields=(),
        operations={"GET": Operation(leader, bare=True)},
        authenticated=False,
    ),
    Path(
        "sys/policies/acl",
        "The names of every ACL policy: root, the built-in ones (<template>:<key>) and the documents.",
        fields=(),
        operations={"LIST": Operation(list_policies)},
    ),
    Path(
        "sys/policies/acl/:name",
        "An ACL policy document (HCL or JSON, as Vault takes it).",
        fields=(
            NAME,
            Field("policy", T.STRING, "The policy document (HCL or JSON); writes only."),
        ),
        operations={
            "GET": Operation(read_policy),
            "POST": Operation(write_policy),
            "DELETE": Operation(delete_policy),
        },
    ),
    # Vault's older policy paths, which hvac's create_or_update_policy, read_policy, list_policies and
    # delete_policy still call: the same documents as sys/policies/acl.
    Path(
        "sys/policy",
        "The names of every ACL policy (Vault's older path; also under 'policies').",
        fields=(),
        operations={"GET": Operation(list_policies_legacy)},
    ),
    Path(
        "sys/policy/:name",
        "An ACL policy document (Vault's older path: the document is 'rules' when read).",
        fields=(
            NAME,
            Field("policy", T.STRING, "The policy document (HCL or JSON); writes only."),
            Field("rules", T.STRING, "The policy document (deprecated name of 'policy').", deprecated=True),
        ),
        operations={
            "GET": Operation(read_policy_legacy),
            "POST": Operation(write_policy_legacy),
            "DELETE": Operation(delete_policy),
        },
    ),
    Path(
        "sys/capabilities-self",
        "The calling token's capabilities on paths.",
        fields=PATHS_FIELDS,
        operations={"POST": Operation(capabilities_self)},
    ),
    Path(
        "sys/capabilities-accessor",
        "The capabilities on paths of the token with this accessor.",
        fields=(Field("accessor", T.STRING, "The accessor of the token to report on."), *PATHS_FIELDS),
        operations={"POST": Operation(capabilities_accessor)},
    ),
    Path(
        "sys/capabilities",
        "Another token's capabilities on paths.",
        fields=(Field("token", T.STRING, "The token to report on."), *PATHS_FIELDS),
        operations={"POST": Operation(capabilities)},
    ),
)
