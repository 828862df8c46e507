"""/v1/sys/namespaces: OpenBao's namespaces (``bao namespace create|list|lookup|delete``, hvac's
``sys.create_namespace``). A namespace is named relative to the request's namespace: ``ns1/sys/namespaces/child``
(or ``X-Vault-Namespace: ns1`` and ``sys/namespaces/child``) is ``ns1/child/``."""

from __future__ import annotations

from typing import Any

from kms_service.errors import InvalidRequest, NotFound
from kms_service.namespaces import Namespace
from kms_service.web.framework import Call, Field, Operation, Path
from kms_service.web.framework import FieldType as T
from kms_service.web.replies import Reply


def _view(space: Namespace) -> dict[str, Any]:
    return {
        "custom_metadata": dict(space.custom_metadata),
        "id": space.id,
        "locked": False,
        "path": space.path,
        "tainted": False,
        "uuid": space.uuid,
    }


async def list_namespaces(call: Call, args: dict[str, Any]) -> dict[str, Any]:
    children = await call.kms.namespaces.list(call.namespace)
    if not children:
        raise NotFound()
    info = {space.path.removeprefix(call.namespace): _view(space) for space in children}
    return {"key_info": info, "keys": list(info)}


async def read_namespace(call: Call, args: dict[str, Any]) -> dict[str, Any]:
    space = await call.kms.namespaces.read(call.namespace, call.params["path"])
    if space is None:
        raise NotFound()
    return _view(space)


async def write_namespace(call: Call, args: dict[str, Any]) -> dict[str, Any]:
    return _view(await call.kms.namespaces.write(call.namespace, call.params["path"], args["custom_metadata"]))


async def patch_namespace(call: Call, args: dict[str, Any]) -> dict[str, Any]:
    """Vault's JSON merge patch of ``custom_metadata``: a key set to null is removed, the others are set."""
    space = await call.kms.namespaces.read(call.namespace, call.params["path"])
    if space is None:
        raise InvalidRequest("namespace not found")  # OpenBao: 400 here (a read: 404)
    patch = args["custom_metadata"] or {}
    if not all(value is None or isinstance(value, str) for value in patch.values()):
        raise InvalidRequest("metadata patch can only have string or null values")
    merged = {**space.custom_metadata, **{k: v for k, v in patch.items() if v is not None}}
    for key in [k for k, v in patch.items() if v is None]:
        merged.pop(key, None)
    return _view(await call.kms.namespaces.write(call.namespace, call.params["path"], merged, create=False))


async def delete_namespace(call: Call, args: dict[str, Any]) -> Reply:
    if not await call.kms.namespaces.delete(call.namespace, call.params["path"]):
        return Reply(None, warnings=["requested namespace does not exist"])
    # OpenBao deletes in the background and says "in-progress"; here it is done when the answer leaves.
    return Reply({"status": "deleted"})


PATHS = (
    Path(
        "sys/namespaces",
        "The namespaces directly below the request's namespace.",
        fields=(),
        operations={"LIST": Operation(list_namespaces)},
    ),
    Path(
        "sys/namespaces/*path",
        "One namespace below the request's: read it, create it (or set its custom metadata), delete it.",
        description=(
            "Deleting a namespace that holds namespaces or mounts is refused: delete them first (a namespace's "
            "keys are never deleted unasked). Its policies and tokens go with it."
        ),
        fields=(
            Field("path", T.STRING, "The namespace's name, one segment (nest by naming the parent in the request)."),
            Field("custom_metadata", T.MAP, "Metadata as strings, kept and shown."),
        ),
        operations={
            "GET": Operation(read_namespace),
            "POST": Operation(write_namespace),
            "PATCH": Operation(patch_namespace, body=True),
            "DELETE": Operation(delete_namespace),
        },
    ),
)
