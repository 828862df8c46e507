"""Vault ACL policy documents: the same HCL (or JSON) text Vault takes, parsed into path rules. Pure.

    path "transit/encrypt/payments" { capabilities = ["update"] }
    path "transit/keys/+/rotate"    { capabilities = ["update", "create"] }
    path "transit/*"                { capabilities = ["deny"] }

HCL is read with python-hcl2; JSON is ``{"path": {"<pattern>": {"capabilities": [...]}}}``. Vault's legacy
``policy = "read"|"write"|"deny"|"sudo"`` shorthand is understood. Parameter constraints
(``allowed_parameters``, ``denied_parameters``, ``required_parameters``) are refused rather than ignored: a
policy that relied on them would otherwise grant more than its author meant. ``min_wrapping_ttl`` and
``max_wrapping_ttl`` are read as Vault reads them (seconds or a duration; either demands a wrapped response).
"""

from __future__ import annotations

import json
from typing import Any

import hcl2
from lark.exceptions import LarkError

from kms_service.acl import Capability, PathRule, Policy
from kms_service.durations import DurationError, parse_seconds
from kms_service.errors import InvalidRequest

CAPABILITIES = {
    "deny": Capability.DENY,
    "create": Capability.CREATE,
    "read": Capability.READ,
    "update": Capability.UPDATE,
    "delete": Capability.DELETE,
    "list": Capability.LIST,
    "sudo": Capability.SUDO,
    "patch": Capability.PATCH,
}
_LEGACY = {
    "deny": Capability.DENY,
    "read": Capability.READ | Capability.LIST,
    "write": Capability.CREATE | Capability.READ | Capability.UPDATE | Capability.DELETE | Capability.LIST,
    "sudo": Capability.CREATE
    | Capability.READ
    | Capability.UPDATE
    | Capability.DELETE
    | Capability.LIST
    | Capability.SUDO,
}
_REFUSED = ("allowed_parameters", "denied_parameters", "required_parameters")
MAX_DOCUMENT_BYTES = 256 * 1024
MAX_RULES = 10_000


def parse(name: str, text: str) -> Policy:
    """The policy ``name`` as ``text`` says; InvalidRequest ("failed to parse policy: ...") when it is wrong."""
    if len(text.encode("utf-8", "replace")) > MAX_DOCUMENT_BYTES:
        raise InvalidRequest(f"failed to parse policy: larger than {MAX_DOCUMENT_BYTES} bytes")
    paths = _paths(text)
    rules = []
    for pattern, body in paths:
        low, high = _wrapping_limits(pattern, body)
        rules.append(PathRule(_pattern(pattern), _capabilities(pattern, body), low, high))
    if len(rules) > MAX_RULES:
        raise InvalidRequest(f"failed to parse policy: more than {MAX_RULES} paths")
    return Policy(name, tuple(rules))


def capability_names(capabilities: Capability, root: bool = False) -> list[str]:
    """Vault's answer for sys/capabilities: ``["root"]``, ``["deny"]`` or the granted names, sorted."""
    if root:
        return ["root"]
    names = sorted(n for n, c in CAPABILITIES.items() if c is not Capability.DENY and capabilities & c)
    return names or ["deny"]


def _paths(text: str) -> list[tuple[str, dict[str, Any]]]:
    stripped = text.lstrip()
    if stripped.startswith("{"):
        try:
            document = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InvalidRequest(f"failed to parse policy: invalid JSON at line {exc.lineno}") from None
        if not isinstance(document, dict) or not isinstance(document.get("path", {}), dict):
            raise InvalidRequest('failed to parse policy: expected {"path": {"<pattern>": {...}}}')
        _refuse_unknown_top_level(document)
        return [(pattern, body) for pattern, body in document.get("path", {}).items()]
    try:
        document = hcl2.loads(text)
    except (LarkError, ValueError, TypeError, UnicodeError, RecursionError):
        raise InvalidRequest("failed to parse policy: not valid HCL") from None
    except Exception:  # noqa: BLE001 - a third-party parser fed untrusted text: any failure is the text's
        raise InvalidRequest("failed to parse policy: not valid HCL") from None
    _refuse_unknown_top_level(document)
    result = []
    for block in document.get("path", []):
        if not isinstance(block, dict):
            raise InvalidRequest("failed to parse policy: a path block needs a pattern")
        for pattern, body in block.items():
            result.append((_unquote(pattern), body))
    return result


def _refuse_unknown_top_level(document: dict[str, Any]) -> None:
    unknown = sorted(k for k in document if k not in ("path", "__comments__", "name"))
    if unknown:
        raise InvalidRequest("failed to parse policy: only 'path' blocks are supported")


def _unquote(value: Any) -> Any:
    """python-hcl2 keeps string literals quoted ('"read"')."""
    if isinstance(value, str) and len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1]
    return value


def _pattern(pattern: Any) -> str:
    if not isinstance(pattern, str) or not pattern or len(pattern) > 512:
        raise InvalidRequest("failed to parse policy: a path pattern must be a non-empty string")
    pattern = pattern.lstrip("/")
    if "*" in pattern[:-1]:
        raise InvalidRequest("failed to parse policy: '*' may only end a path pattern")
    return pattern


def _wrapping_limits(pattern: str, body: Any) -> tuple[int, int]:
    """A path block's min_wrapping_ttl and max_wrapping_ttl in seconds (0: not set), in Vault's words."""
    if not isinstance(body, dict):
        return (0, 0)
    limits = []
    for name in ("min_wrapping_ttl", "max_wrapping_ttl"):
        raw = _unquote(body.get(name))
        if raw is None or raw == "":
            limits.append(0)
            continue
        try:
            limits.append(parse_seconds(raw))
        except DurationError:
            shown = raw if isinstance(raw, str | int) and len(str(raw)) <= 64 else "..."
            raise InvalidRequest(
                f"failed to parse policy: path {json.dumps(pattern)}: error parsing {name}: "
                f"time: invalid duration {json.dumps(str(shown))}"
            ) from None
    low, high = limits
    if high and low and high < low:
        raise InvalidRequest(
            f"failed to parse policy: path {json.dumps(pattern)}: max_wrapping_ttl cannot be less than min_wrapping_ttl"
        )
    return (low, high)


def _capabilities(pattern: str, body: Any) -> Capability:
    if not isinstance(body, dict):
        raise InvalidRequest(f"failed to parse policy: path {json.dumps(pattern)}: expected a block")
    for key in body:
        if key in _REFUSED:
            raise InvalidRequest(
                f"failed to parse policy: path {json.dumps(pattern)}: {key} is not supported by this server"
            )
    granted = Capability(0)
    for raw in body.get("capabilities", []) or []:
        value = _unquote(raw)
        capability = CAPABILITIES.get(value) if isinstance(value, str) else None
        if capability is None:
            raise InvalidRequest(f"failed to parse policy: path {json.dumps(pattern)}: invalid capability")
        granted |= capability
    legacy = _unquote(body.get("policy"))
    if legacy is not None:
        if legacy not in _LEGACY:
            raise InvalidRequest(f"failed to parse policy: path {json.dumps(pattern)}: invalid policy")
        granted |= _LEGACY[legacy]
    return granted
