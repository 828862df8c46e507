"""/v1/sys/wrapping/*: Vault's response wrapping (unwrap, lookup, rewrap, wrap).

Any answer with data is wrapped when the request carries ``X-Vault-Wrap-TTL`` (``web/app.py:wrap_reply``);
these paths read, renew and make wrapping tokens (``service/response_wrapping.py``).

Who may call them: a wrapping token authenticates nothing (it is not a token of ``tokens``), so it opens only
what these handlers look up with it. Unwrap takes the wrapping token as the caller's token, or in the body
(``token``) from a token whose policies grant ``sys/wrapping/unwrap`` (the default policy does) or from another
wrapping token (spent by it, as in OpenBao); lookup needs no token but the one it looks up (Vault's
unauthenticated path). Wrap and rewrap are checked against the caller's policies like any path (the default
policy grants wrap, not rewrap).
"""

from __future__ import annotations

from typing import Any

from kms_service.acl import Capability
from kms_service.errors import InvalidRequest, PermissionDenied
from kms_service.service.response_wrapping import rfc3339
from kms_service.tokens import presented_token, token_from_headers
from kms_service.web.framework import Call, Field, Operation, Path
from kms_service.web.framework import FieldType as T
from kms_service.web.replies import Reply

# Vault's words (consts.ErrInvalidWrappingToken, and its check of an empty token).
INVALID_WRAPPING_TOKEN = "wrapping token is not valid or does not exist"  # noqa: S105 (a message)
EMPTY_WRAPPING_TOKEN = "error validating wrapping token: token is empty"  # noqa: S105 (a message)
WRAPPING_REQUIRED = "endpoint requires response wrapping to be used"
UNWRAP_PATH = "sys/wrapping/unwrap"


def _wrapping_token(call: Call, args: dict[str, Any]) -> str:
    """The token in the body, else the one the request presents; refused when there is none."""
    token = args.get("token") or presented_token(call.request.headers)
    if not token:
        raise PermissionDenied(EMPTY_WRAPPING_TOKEN)
    return token


async def unwrap(call: Call, args: dict[str, Any]) -> Reply:
    body_token, presented = args["token"], presented_token(call.request.headers)
    if body_token and body_token != presented:
        # Someone else's wrapping token, in the body: the request's token must be a token whose policies grant
        # this path (the default policy does), or a wrapping token, which this request spends as OpenBao does.
        principal = await call.kms.tokens.authenticate(token_from_headers(call.request.headers))
        if principal is None:
            if not presented or await call.kms.wrapped_responses.unwrap(presented) is None:
                raise PermissionDenied()
        else:
            call.principal = principal
            path = call.namespace.removeprefix(principal.info.namespace) + UNWRAP_PATH
            if not call.namespace.startswith(principal.info.namespace) or not principal.acl.allows(
                path, Capability.UPDATE
            ):
                raise PermissionDenied()
            if not await call.kms.tokens.use(principal):
                raise PermissionDenied()
    # The same wrapping token in the body and as the request's token is unwrapped once (OpenBao fails).
    response = await call.kms.wrapped_responses.unwrap(_wrapping_token(call, args))
    if response is None:
        raise InvalidRequest(INVALID_WRAPPING_TOKEN)
    return Reply(body=response, envelope=True)


async def lookup(call: Call, args: dict[str, Any]) -> dict[str, Any]:
    found = await call.kms.wrapped_responses.lookup(_wrapping_token(call, args))
    if found is None:
        raise InvalidRequest(INVALID_WRAPPING_TOKEN)
    return {
        "creation_path": found.creation_path,
        "creation_time": rfc3339(found.created_at),
        "creation_ttl": found.ttl,
    }


async def rewrap(call: Call, args: dict[str, Any]) -> Reply:
    info = await call.kms.wrapped_responses.rewrap(_wrapping_token(call, args))
    if info is None:
        raise InvalidRequest(INVALID_WRAPPING_TOKEN)
    return Reply(wrap_info=info.as_vault())


async def wrap(call: Call, args: dict[str, Any]) -> dict[str, Any]:
    if call.wrap_ttl is None:
        raise InvalidRequest(WRAPPING_REQUIRED)
    call.set_field_warnings([])  # every field is the data to wrap, none is ignored
    return dict(call.body or {})


TOKEN = Field("token", T.STRING, "The wrapping token (default: the request's own token).")
_WRAP_INFO = (Field("wrap_info", T.MAP, "The new wrapping token: token, accessor, ttl, creation_time, creation_path."),)

PATHS = (
    Path(
        "sys/wrapping/unwrap",
        "The response a wrapping token holds, once: the token is spent by it.",
        fields=(TOKEN,),
        operations={"POST": Operation(unwrap)},
        description="The wrapping token is the request's token, or 'token' in the body (then the request's token "
        "must be valid). The answer is the wrapped response as it would have been sent.",
        authenticated=False,
        audited=True,
    ),
    Path(
        "sys/wrapping/lookup",
        "A wrapping token's creation path, time and TTL (the token is not spent).",
        fields=(TOKEN,),
        operations={
            "GET": Operation(
                lookup,
                returns=(
                    Field("creation_path", T.STRING, "The path whose response it holds."),
                    Field("creation_time", T.STRING, "When it was wrapped (RFC 3339)."),
                    Field("creation_ttl", T.INT, "The wrap TTL in seconds."),
                ),
            ),
            "POST": Operation(lookup),
        },
        authenticated=False,
        audited=True,
    ),
    Path(
        "sys/wrapping/rewrap",
        "The same response under a new wrapping token with the same TTL; the old token is spent.",
        fields=(TOKEN,),
        operations={"POST": Operation(rewrap, returns=_WRAP_INFO)},
    ),
    Path(
        "sys/wrapping/wrap",
        "Wrap the request's body (any JSON object) in a wrapping token; needs X-Vault-Wrap-TTL.",
        fields=(),
        operations={"POST": Operation(wrap, returns=_WRAP_INFO)},
    ),
)
