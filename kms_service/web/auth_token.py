"""/v1/auth/token/*: Vault's token store over HTTP (create, create-orphan, lookup, renew, revoke, accessors).

``bao token create|lookup|renew|revoke`` and hvac's ``client.auth.token.*`` land here. Every path is checked
against the token's policies; the default policy grants the *-self paths.
Tokens of the services YAML's endpoints stay managed by ``relationships``: they cannot be renewed here.
"""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from kms_service.acl import Capability
from kms_service.durations import DurationError, parse_seconds
from kms_service.errors import InvalidRequest, NotFound, PermissionDenied
from kms_service.service import utcnow
from kms_service.service.policies import canonical_name
from kms_service.service.tokens import TokenRequest
from kms_service.tokens import BATCH, ROLE_TOKEN_TYPES, TOKEN_TYPES, TokenInfo, TokenRole
from kms_service.web.framework import Call, Field, Operation, Path
from kms_service.web.framework import FieldType as T
from kms_service.web.replies import Reply


def _rfc3339(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _ttl(info: TokenInfo) -> int:
    if info.expires_at is None:
        return 0
    return max(0, round((info.expires_at - utcnow()).total_seconds()))


def lookup_data(info: TokenInfo, token_id: str) -> dict[str, Any]:
    """Vault's token lookup fields, from the stored values (``id`` is "" when looked up by accessor)."""
    creation_ttl = info.ttl
    if not creation_ttl and info.expires_at is not None:
        creation_ttl = int((info.expires_at - info.created_at).total_seconds())
    data = {
        "accessor": info.accessor,
        "creation_time": int(info.created_at.timestamp()),
        "creation_ttl": creation_ttl,
        "display_name": info.display_name,
        "entity_id": "",
        "expire_time": _rfc3339(info.expires_at) if info.expires_at else None,
        "explicit_max_ttl": info.explicit_max_ttl,
        "id": token_id,
        "issue_time": _rfc3339(info.created_at),
        "meta": dict(info.meta) if info.meta else None,
        "num_uses": info.num_uses,
        "orphan": info.parent_accessor is None,
        "path": "auth/token/create",
        "policies": list(info.policies),
        "renewable": info.renewable,
        "ttl": _ttl(info),
        "type": info.token_type,
    }
    if info.period:
        data["period"] = info.period
    return data


def _with_namespace(data: dict[str, Any], info: TokenInfo) -> dict[str, Any]:
    """Vault shows a namespace's token's namespace (not the root's)."""
    if info.namespace:
        data["namespace_path"] = info.namespace
    return data


def _token_path(call: Call, path: str) -> str:
    """``path`` in the request's namespace as the caller's policies name it (relative to its namespace)."""
    assert call.principal is not None
    return call.namespace.removeprefix(call.principal.info.namespace) + path


def _visible(call: Call, info: TokenInfo | None) -> TokenInfo | None:
    """A token of the request's namespace or below; another namespace's tokens are not found from here."""
    return info if info is not None and info.namespace.startswith(call.namespace) else None


def auth_block(info: TokenInfo, token: str) -> dict[str, Any]:
    return {
        "client_token": token,
        "accessor": info.accessor,
        "policies": list(info.policies),
        "token_policies": list(info.policies),
        "metadata": dict(info.meta) if info.meta else None,
        "lease_duration": _ttl(info),
        "renewable": info.renewable,
        "entity_id": "",
        "token_type": info.token_type,
        "orphan": info.parent_accessor is None,
        "mfa_requirement": None,
        "num_uses": info.num_uses,
    }


def _seconds(name: str, value: Any) -> int | None:
    if value is None or value == "":
        return None
    try:
        return parse_seconds(value)
    except DurationError as error:
        raise InvalidRequest(f"error parsing {name}: {error}") from None


def _meta(value: Any) -> dict[str, str] | None:
    if value is None:
        return None
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise InvalidRequest("meta: keys and values must be strings")
    return value


def _policies(value: Any) -> tuple[str, ...]:
    if not value:
        return ()
    if not all(isinstance(p, str) for p in value):
        raise InvalidRequest("policies must be strings")
    names = [canonical_name(p.strip()) for item in value for p in item.split(",") if p.strip()]
    return tuple(names)


def _token_type(value: Any) -> str | None:
    if value is None or value == "":
        return None
    if value not in TOKEN_TYPES:
        raise InvalidRequest("invalid 'token_type' value")
    return value


async def _create(call: Call, args: dict[str, Any], orphan: bool, role: TokenRole | None = None) -> Reply:
    principal = call.principal
    assert principal is not None
    # Vault's order: these refusals come before any privilege check.
    if principal.info.batch:
        raise InvalidRequest("batch tokens cannot create more tokens")
    if principal.info.num_uses > 0:
        raise InvalidRequest("restricted use token cannot generate child tokens")
    sudo = principal.acl.allows(_token_path(call, "auth/token/create"), Capability.SUDO)
    # Through a role, the role says whether the token is an orphan; no_parent is not read (as in Vault).
    if args["no_parent"] and not orphan and role is None:
        if not sudo:
            raise InvalidRequest("root or sudo privileges required to create orphan token")
        orphan = True
    period = _seconds("period", args["period"]) or 0
    # A role's period needs no privilege (its writer granted it); one asked for otherwise does, as in Vault.
    if period and not (role is not None and role.token_period) and not sudo:
        raise InvalidRequest("root or sudo privileges required to create periodic token")
    request = TokenRequest(
        policies=_policies(args["policies"]),
        ttl=_seconds("ttl", args["ttl"]) or _seconds("lease", args["lease"]),
        explicit_max_ttl=_seconds("explicit_max_ttl", args["explicit_max_ttl"]) or 0,
        display_name=args["display_name"] or "",
        num_uses=args["num_uses"] or 0,
        renewable=True if args["renewable"] is None else args["renewable"],
        meta=_meta(args["meta"]),
        orphan=orphan,
        period=period,
        token_type=_token_type(args["type"]),
        no_default_policy=bool(args["no_default_policy"]),
    )
    token, info, warnings = await call.kms.tokens.create_child(principal, request, call.namespace, role)
    return Reply(auth=auth_block(info, token), warnings=warnings)


async def create_with_role(call: Call, args: dict[str, Any]) -> Reply:
    name = call.params["role_name"]
    role = await call.kms.tokens.role(call.namespace, name)
    if role is None:
        raise InvalidRequest(f"unknown role {name}")
    return await _create(call, args, orphan=False, role=role)


async def create(call: Call, args: dict[str, Any]) -> Reply:
    return await _create(call, args, orphan=False)


async def create_orphan(call: Call, args: dict[str, Any]) -> Reply:
    return await _create(call, args, orphan=True)


async def _by_token(call: Call, token: Any) -> TokenInfo:
    if not token or not isinstance(token, str):
        raise InvalidRequest("missing token")
    info = _visible(call, await call.kms.tokens.find(token=token))
    if info is None:
        raise PermissionDenied("bad token")
    return info


async def _by_accessor(call: Call, accessor: Any) -> TokenInfo:
    if not accessor or not isinstance(accessor, str):
        raise InvalidRequest("missing accessor")
    info = _visible(call, await call.kms.tokens.find(accessor=accessor))
    if info is None:
        raise InvalidRequest("invalid accessor")
    return info


async def lookup(call: Call, args: dict[str, Any]) -> dict[str, Any]:
    info = await _by_token(call, args["token"])
    return _with_namespace(lookup_data(info, args["token"]), info)


async def lookup_self(call: Call, args: dict[str, Any]) -> dict[str, Any]:
    assert call.principal is not None
    # The stored values, not the cached ones: a renew or a use may have changed them.
    if call.principal.info.batch:  # nothing stored: the token's own values
        return lookup_data(call.principal.info, call.principal.token)
    info = await call.kms.tokens.find(accessor=call.principal.info.accessor)
    if info is None:  # this request took the last of its uses
        info = replace(call.principal.info, num_uses=0)
    return _with_namespace(lookup_data(info, call.principal.token), info)


async def lookup_accessor(call: Call, args: dict[str, Any]) -> dict[str, Any]:
    info = await _by_accessor(call, args["accessor"])
    return _with_namespace(lookup_data(info, ""), info)


async def _renew(call: Call, info: TokenInfo, token: str, increment: Any) -> Reply:
    if info.batch:
        raise InvalidRequest("batch tokens cannot be renewed")
    renewed, warnings = await call.kms.tokens.renew(info.accessor, _seconds("increment", increment))
    return Reply(auth=auth_block(renewed, token), warnings=warnings)


async def renew(call: Call, args: dict[str, Any]) -> Reply:
    return await _renew(call, await _by_token(call, args["token"]), args["token"], args["increment"])


async def renew_self(call: Call, args: dict[str, Any]) -> Reply:
    assert call.principal is not None
    return await _renew(call, call.principal.info, call.principal.token, args["increment"])


async def revoke(call: Call, args: dict[str, Any]) -> None:
    info = _visible(call, await call.kms.tokens.find(token=args["token"])) if args["token"] else None
    if not args["token"]:
        raise InvalidRequest("missing token")
    if info is not None and info.batch:
        raise InvalidRequest("batch tokens cannot be revoked")
    if info is not None:
        await call.kms.tokens.revoke_tree(info.accessor)


async def revoke_self(call: Call, args: dict[str, Any]) -> None:
    assert call.principal is not None
    if call.principal.info.batch:
        raise InvalidRequest("batch tokens cannot be revoked")
    await call.kms.tokens.revoke_tree(call.principal.info.accessor)


async def revoke_accessor(call: Call, args: dict[str, Any]) -> None:
    info = await _by_accessor(call, args["accessor"])
    await call.kms.tokens.revoke_tree(info.accessor)


async def accessors(call: Call, args: dict[str, Any]) -> dict[str, Any]:
    assert call.principal is not None
    # One of Vault's root paths: `list` (checked by the router) and `sudo`.
    if not call.principal.acl.allows(_token_path(call, "auth/token/accessors/"), Capability.SUDO):
        raise PermissionDenied()
    return {"keys": await call.kms.tokens.accessors(call.namespace)}


# Vault's generic names: word characters, with "-" and "." inside.
_ROLE_NAME_RE = re.compile(r"\w([\w.-]*\w)?", re.ASCII)


def _role_name(value: str) -> None:
    if len(value) > 128 or not _ROLE_NAME_RE.fullmatch(value):
        raise InvalidRequest("role name: letters, digits, '_', '-' and '.' (not first or last), at most 128")


async def read_role(call: Call, args: dict[str, Any]) -> dict[str, Any]:
    name = call.params["role_name"]
    role = await call.kms.tokens.role(call.namespace, name)
    if role is None:
        raise NotFound()
    return role.data(name)


async def write_role(call: Call, args: dict[str, Any]) -> None:
    """Create or update a role: the fields sent replace the role's, the others stay (as in Vault)."""
    name = call.params["role_name"]
    role = await call.kms.tokens.role(call.namespace, name) or TokenRole()
    changes: dict[str, Any] = {}
    for field in ("allowed_policies", "disallowed_policies"):
        if args[field] is not None:
            # Vault lowercases a role's policy names.
            changes[field] = tuple(sorted({canonical_name(policy) for policy in args[field]}))
    for field in ("orphan", "renewable", "path_suffix"):
        if args[field] is not None:
            changes[field] = args[field]
    for field, older in (("token_period", "period"), ("token_explicit_max_ttl", "explicit_max_ttl")):
        value = _seconds(field, args[field])
        if value is None:
            value = _seconds(older, args[older])
        if value is not None:
            changes[field] = value
    token_type = args["token_type"]
    if token_type is not None and token_type != "":
        if token_type not in ROLE_TOKEN_TYPES:
            shown = token_type if len(token_type) <= 32 and token_type.isprintable() else "..."
            raise InvalidRequest(f"invalid 'token_type' value \"{shown}\"")
        changes["token_type"] = token_type
    role = replace(role, **changes)
    if role.token_type == BATCH and role.renewable:
        raise InvalidRequest("'token_type' cannot be 'batch' when role is set to generate renewable tokens")
    await call.kms.tokens.write_role(call.namespace, name, role)


async def delete_role(call: Call, args: dict[str, Any]) -> None:
    await call.kms.tokens.delete_role(call.namespace, call.params["role_name"])


async def list_roles(call: Call, args: dict[str, Any]) -> dict[str, Any]:
    names = await call.kms.tokens.role_names(call.namespace)
    if not names:
        raise NotFound()
    return {"keys": names}


TOKEN = Field("token", T.STRING, "The token.")
ACCESSOR = Field("accessor", T.STRING, "The token's accessor.")
INCREMENT = Field("increment", T.DURATION, "The new TTL from now (default: the token's creation TTL).")
CREATE_FIELDS = (
    Field("policies", T.LIST, "Policy names (default: the caller's); a non-root caller gives a subset of its own."),
    Field("ttl", T.DURATION, "The TTL (seconds or e.g. 30d); at most the caller's remaining life."),
    Field("lease", T.DURATION, "The TTL (Vault's older name).", deprecated=True),
    Field("explicit_max_ttl", T.DURATION, "A hard limit on the token's life, renewals included."),
    Field("display_name", T.STRING, "A display name (prefixed with 'token-')."),
    Field("num_uses", T.INT, "Uses before the token is gone; 0: unlimited."),
    Field("renewable", T.BOOL, "Whether the token may be renewed (default true)."),
    Field("meta", T.MAP, "Metadata: string keys and values."),
    Field("no_parent", T.BOOL, "An orphan (needs root or sudo on auth/token/create)."),
    Field("id", T.STRING, "Not supported: tokens are always random.", ignored=True),
    Field(
        "period",
        T.DURATION,
        "A periodic token: each renewal sets its TTL to this (needs root or sudo on auth/token/create).",
    ),
    Field("type", T.STRING, "service (default) or batch: sealed in the token, stored nowhere, not renewable."),
    Field("entity_alias", T.STRING, "Not supported (identity).", ignored=True),
    Field("no_default_policy", T.BOOL, "Leave out the default policy (otherwise every token but root has it)."),
)
_POST = "POST"
ROLE_NAME = Field("role_name", T.STRING, "The role's name.", check=_role_name)
ROLE_FIELDS = (
    ROLE_NAME,
    Field(
        "allowed_policies",
        T.COMMA_LIST,
        "Policies its tokens may have (default: all); none: the caller's. A list, or names separated by commas.",
    ),
    Field("disallowed_policies", T.COMMA_LIST, "Policies its tokens may never have."),
    Field("orphan", T.BOOL, "Its tokens have no parent."),
    Field("renewable", T.BOOL, "Whether its tokens may be renewed (default true)."),
    Field("path_suffix", T.STRING, "A suffix for its tokens' path (kept, not used)."),
    Field("token_period", T.DURATION, "Its tokens are periodic, with this period (no sudo needed)."),
    Field("period", T.DURATION, "token_period's older name.", deprecated=True),
    Field("token_explicit_max_ttl", T.DURATION, "A hard limit on its tokens' life."),
    Field("explicit_max_ttl", T.DURATION, "token_explicit_max_ttl's older name.", deprecated=True),
    Field(
        "token_type",
        T.STRING,
        "service, batch, default-service (default) or default-batch (the request's type may choose).",
    ),
)

PATHS = (
    Path(
        "auth/token/create",
        "Create a token (a child of the caller).",
        fields=CREATE_FIELDS,
        operations={_POST: Operation(create)},
    ),
    Path(
        "auth/token/create-orphan",
        "Create a token with no parent.",
        fields=CREATE_FIELDS,
        operations={_POST: Operation(create_orphan)},
    ),
    Path(
        "auth/token/create/:role_name",
        "Create a token through a role: the role's policies, period, type and limits.",
        fields=(ROLE_NAME, *CREATE_FIELDS),
        operations={_POST: Operation(create_with_role)},
    ),
    Path(
        "auth/token/roles",
        "The token roles.",
        fields=(),
        operations={"LIST": Operation(list_roles)},
        description="No roles: 404.",
    ),
    Path(
        "auth/token/roles/:role_name",
        "A token role: read, create or update (the fields sent), delete.",
        fields=ROLE_FIELDS,
        operations={
            "GET": Operation(read_role),
            _POST: Operation(write_role),
            "DELETE": Operation(delete_role),
        },
    ),
    Path(
        "auth/token/lookup",
        "A token's properties.",
        fields=(TOKEN,),
        operations={_POST: Operation(lookup)},
    ),
    Path(
        "auth/token/lookup-self",
        "The calling token: policies, accessor, ttl and expiry.",
        fields=(),
        operations={"GET": Operation(lookup_self, body=False), _POST: Operation(lookup_self, body=False)},
        acl_in_token_namespace=True,
    ),
    Path(
        "auth/token/lookup-accessor",
        "A token's properties, by accessor (without its id).",
        fields=(ACCESSOR,),
        operations={_POST: Operation(lookup_accessor)},
    ),
    Path(
        "auth/token/renew",
        "Renew a token.",
        fields=(TOKEN, INCREMENT),
        operations={_POST: Operation(renew)},
    ),
    Path(
        "auth/token/renew-self",
        "Renew the calling token.",
        fields=(INCREMENT,),
        operations={_POST: Operation(renew_self)},
        acl_in_token_namespace=True,
    ),
    Path(
        "auth/token/revoke",
        "Revoke a token and the tokens it made.",
        fields=(TOKEN,),
        operations={_POST: Operation(revoke)},
    ),
    Path(
        "auth/token/revoke-self",
        "Revoke the calling token and the tokens it made.",
        fields=(),
        operations={_POST: Operation(revoke_self, body=False)},
        acl_in_token_namespace=True,
    ),
    Path(
        "auth/token/revoke-accessor",
        "Revoke a token, by accessor, and the tokens it made.",
        fields=(ACCESSOR,),
        operations={_POST: Operation(revoke_accessor)},
    ),
    Path(
        "auth/token/accessors",
        "The accessors of every token.",
        fields=(),
        operations={"LIST": Operation(accessors)},
    ),
)
