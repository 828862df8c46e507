"""The OpenAPI 3 document of this API, generated from the path table (as Vault generates its own from its
``framework.Path`` list): paths, methods, path parameters, request bodies from the fields, responses. A field
whose values the code fixes (a key type: the registry's names) gets them as its ``enum`` (``key_fields``)."""

from __future__ import annotations

import base64
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from kms_service import __version__
from kms_service.web.framework import BATCH_INPUT, Field, FieldType, Operation, Path
from kms_service.web.key_fields import enum_of

OPENAPI_VERSION = "3.0.3"

_TYPE_SCHEMAS: dict[FieldType, dict[str, Any]] = {
    FieldType.STRING: {"type": "string"},
    FieldType.BASE64: {"type": "string", "format": "byte"},
    FieldType.INT: {"type": "integer"},
    FieldType.BOOL: {"type": "boolean"},
    FieldType.LIST: {"type": "array", "items": {}},
    FieldType.COMMA_LIST: {"oneOf": [{"type": "array", "items": {"type": "string"}}, {"type": "string"}]},
    FieldType.MAP: {"type": "object"},
    FieldType.DURATION: {"oneOf": [{"type": "integer"}, {"type": "string"}]},
    FieldType.VERSION: {"oneOf": [{"type": "integer"}, {"type": "string"}]},
}
_HTTP_METHOD = {"GET": "get", "HEAD": "head", "POST": "post", "DELETE": "delete", "LIST": "get", "PATCH": "patch"}


@dataclass(frozen=True)
class Route:
    """One (URL, HTTP method) of the document, and what in the table it comes from."""

    url: str  # "/transit/sign/{name}/{hash}"; a LIST is GET with ?list=true
    http_method: str  # "get", "post", ...
    path: Path
    pattern: tuple[str, ...]
    method: str  # the table's: GET, HEAD, POST, DELETE or LIST
    operation: Operation


def routes(paths: Iterable[Path]) -> Iterator[Route]:
    for path in paths:
        for pattern in path.patterns:
            url = "/" + "/".join("{" + s[1:] + "}" if s.startswith((":", "*")) else s for s in pattern)
            for method, operation in path.operations.items():
                # Vault's documents put a LIST next to a read of the same path at the path with a '/'.
                target = url + "/" if method == "LIST" and "GET" in path.operations else url
                yield Route(target, _HTTP_METHOD[method], path, pattern, method, operation)


def document(paths: Iterable[Path]) -> dict[str, Any]:
    doc_paths: dict[str, dict[str, Any]] = {}
    schemas: dict[str, Any] = {
        "Response": _ENVELOPE,
        "Errors": {
            "type": "object",
            "properties": {"errors": {"type": "array", "items": {"type": "string"}}},
            "required": ["errors"],
        },
    }
    for route in routes(paths):
        doc_paths.setdefault(route.url, {})[route.http_method] = _operation(route, schemas)
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "kms-service",
            "description": "HashiCorp Vault's transit API (a subset), served by kms-service. Errors are "
            '{"errors": [...]}; a token goes in X-Vault-Token or Authorization: Bearer.',
            "version": __version__,
        },
        "servers": [{"url": "/v1"}],
        "paths": doc_paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "vaultToken": {"type": "apiKey", "in": "header", "name": "X-Vault-Token"},
                "bearer": {"type": "http", "scheme": "bearer"},
            },
        },
        "security": [{"vaultToken": []}, {"bearer": []}],
    }


def _operation(route: Route, schemas: dict[str, Any]) -> dict[str, Any]:
    path, op = route.path, route.operation
    words = [s for s in route.pattern if not s.startswith((":", "*"))]
    params = [s[1:] for s in route.pattern if s.startswith((":", "*"))]
    operation_id = "-".join([route.method.lower(), *words, *params])
    result: dict[str, Any] = {
        "operationId": operation_id,
        "summary": path.summary,
        "tags": [words[0]],
        "x-vault-capability": _capability(op),
    }
    description = path.description
    if op.existence is not None:
        description += (
            " A POST to a target that does not exist is a create (the token needs `create`); otherwise an update."
        )
    if description.strip():
        result["description"] = description.strip()
    parameters = [
        {"name": f.name, "in": "path", "required": True, "description": f.description, "schema": {"type": "string"}}
        for f in path.param_fields
        if (":" + f.name in route.pattern or "*" + f.name in route.pattern)
    ]
    if route.method == "LIST":
        parameters.append(
            {
                "name": "list",
                "in": "query",
                "required": True,
                "description": "Must be true: a list. The LIST method is the same request (OpenAPI has no LIST).",
                "schema": {"type": "string", "enum": ["true"]},
            }
        )
    if parameters:
        result["parameters"] = parameters
    if op.body and path.body_fields:
        name = _register(
            words,
            route.method,
            "Request",
            schemas,
            {
                "type": "object",
                "properties": {f.name: _field_schema(f, path) for f in path.body_fields},
            },
        )
        result["requestBody"] = {
            "required": False,
            "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{name}"}}},
        }
    result["responses"] = _responses(route, words, schemas)
    if not path.authenticated:
        result["security"] = []
    return result


def _responses(route: Route, words: list[str], schemas: dict[str, Any]) -> dict[str, Any]:
    path, op = route.path, route.operation
    errors = {"application/json": {"schema": {"$ref": "#/components/schemas/Errors"}}}
    if route.method == "HEAD":
        ok: dict[str, Any] = {"description": "OK (no body)"}
    elif op.bare:
        content = {
            media: {"schema": {"type": "object"} if "json" in media else {"type": "string"}} for media in op.media_types
        }
        ok = {"description": "OK: the document itself", "content": content}
    else:
        data: dict[str, Any] = {"type": "object", "properties": {f.name: _field_schema(f, path) for f in op.returns}}
        if op.batch is not None:
            item = {
                "type": "object",
                "properties": {
                    **{f.name: _field_schema(f, path) for f in op.returns},
                    "error": {"type": "string", "description": "Why this item failed (then no result fields)."},
                    "reference": {"type": "string", "description": "The item's reference, or ''."},
                },
            }
            data["properties"]["batch_results"] = {
                "type": "array",
                "items": item,
                "description": "With batch_input only (instead of the other fields): one result per item, in order.",
            }
        envelope = {"allOf": [{"$ref": "#/components/schemas/Response"}, {"properties": {"data": data}}]}
        name = _register(words, route.method, "Response", schemas, envelope)
        ok = {
            "description": "OK",
            "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{name}"}}},
        }
    responses: dict[str, Any] = {"200": ok}
    if op.batch is not None and op.batch.status_from_items:
        responses["400"] = {
            "description": "Bad request, or a batch in which an item failed: then the body is the success "
            "envelope with batch_results (the status is partial_failure_response_code if given and some "
            "items succeeded).",
            "content": {
                "application/json": {
                    "schema": {
                        "oneOf": [{"$ref": "#/components/schemas/Errors"}, ok["content"]["application/json"]["schema"]]
                    }
                }
            },
        }
    elif op.body or path.params:
        responses["400"] = {"description": "Bad request", "content": errors}
    if path.authenticated:
        responses["403"] = {"description": "No valid token, or the path is not granted", "content": errors}
    if route.method == "LIST" or (route.method == "GET" and path.params):
        responses["404"] = {"description": 'Nothing there ({"errors": []})', "content": errors}
    return responses


def _field_schema(f: Field, path: Path) -> dict[str, Any]:
    if f is BATCH_INPUT:
        items = {"type": "object", "properties": {g.name: _field_schema(g, path) for g in path.item_fields}}
        if required := [g.name for g in path.item_fields if g.required]:
            items["required"] = required
        return {"type": "array", "items": items, "description": f.description}
    schema = {**_TYPE_SCHEMAS[f.type], "description": f.description}
    if (values := enum_of(f)) is not None:
        schema["enum"] = list(values)
    if f.default is not None:
        schema["default"] = base64.b64encode(f.default).decode() if isinstance(f.default, bytes) else f.default
    if f.deprecated:
        schema["deprecated"] = True
    if f.batch and f.name != "reference":
        schema["description"] += " (Also an item field of batch_input.)"
    return schema


def _capability(op: Operation) -> str:
    if op.existence is not None:
        return "create or update"
    assert op.capability is not None
    return " ".join(c.name.lower() for c in type(op.capability) if c in op.capability)


def _register(words: list[str], method: str, suffix: str, schemas: dict[str, Any], schema: dict[str, Any]) -> str:
    """Add ``schema`` to the components under a name made of the path's words (the same schema, e.g. for
    both of sign's URLs, is added once)."""
    base = "".join(w.replace("-", " ").replace("_", " ").title().replace(" ", "") for w in words)
    candidates = [base + suffix, base + method.title() + suffix]
    candidates += (f"{base}{method.title()}{suffix}{n}" for n in range(2, 100))
    for name in candidates:
        if schemas.get(name, schema) == schema:
            schemas[name] = schema
            return name
    raise ValueError(f"no free schema name for {base}")


_ENVELOPE = {
    "type": "object",
    "description": "Vault's response envelope.",
    "properties": {
        "request_id": {"type": "string"},
        "lease_id": {"type": "string"},
        "renewable": {"type": "boolean"},
        "lease_duration": {"type": "integer"},
        "data": {"type": "object"},
        "wrap_info": {"type": "object", "nullable": True},
        "warnings": {"type": "array", "items": {"type": "string"}, "nullable": True},
        "auth": {"type": "object", "nullable": True},
    },
}


def path_help(path: Path, requested: str) -> dict[str, Any]:
    """Vault's answer to ``GET /v1/<path>?help=1`` (``bao path-help``): the path's text and its OpenAPI part."""
    lines = [f"Request:        {requested}", f"Matching Route: {'/'.join(path.patterns[-1])}", "", path.summary, ""]
    fields = [f for f in path.fields if not f.ignored]
    if fields:
        lines += ["## PARAMETERS", ""]
        for f in fields:
            lines += [f"{f.name} ({f.type.value})", f"    {f.description}", ""]
    if path.description:
        lines += ["## DESCRIPTION", "", path.description, ""]
    return {"help": "\n".join(lines), "see_also": None, "openapi": document((path,))}
