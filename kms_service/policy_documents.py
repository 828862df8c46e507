"""Vault ACL policy documents: the same HCL (or JSON) text Vault takes, parsed into path rules. Pure.

    path "transit/encrypt/payments" { capabilities = ["update"] }
    path "transit/keys/+/rotate"    { capabilities = ["update", "create"] }
    path "transit/*"                { capabilities = ["deny"] }

HCL is read with python-hcl2; JSON is ``{"path": {"<pattern>": {"capabilities": [...]}}}``. A pattern named twice
in one document (two blocks, or a JSON key given twice) and an attribute given twice in one block all count, as
in Vault: their capabilities add up and a ``deny`` among them wins (the ACL merges rules of one pattern). Vault's legacy
``policy = "read"|"write"|"deny"|"sudo"`` shorthand is understood. Parameter constraints
(``allowed_parameters``, ``denied_parameters``, ``required_parameters``) are refused rather than ignored: a
policy that relied on them would otherwise grant more than its author meant. ``min_wrapping_ttl`` and
``max_wrapping_ttl`` are read as Vault reads them (seconds or a duration; either demands a wrapped response).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from hcl2.query.body import DocumentView
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


# A block's attributes: name → every value it was given, in order (an attribute may be given twice).
Attributes = dict[str, list[Any]]


class _Pairs(list):
    """A JSON object's members in order, duplicates kept (json's object_pairs_hook)."""


def _paths(text: str) -> list[tuple[str, Attributes]]:
    stripped = text.lstrip()
    if stripped.startswith("{"):
        return _json_paths(text)
    try:
        document = DocumentView.parse(text)
    except (LarkError, ValueError, TypeError, UnicodeError, RecursionError):
        raise InvalidRequest("failed to parse policy: not valid HCL") from None
    except Exception:  # noqa: BLE001 - a third-party parser fed untrusted text: any failure is the text's
        raise InvalidRequest("failed to parse policy: not valid HCL") from None
    if any(a.name != "name" for a in document.attributes()) or any(b.block_type != "path" for b in document.blocks()):
        raise InvalidRequest(_ONLY_PATHS)
    result = []
    for block in document.blocks("path"):
        if len(block.name_labels) != 1:
            raise InvalidRequest("failed to parse policy: a path block needs a pattern")
        attributes: Attributes = {}
        for attribute in block.attributes():
            attributes.setdefault(attribute.name, []).append(attribute.value)
        for nested in block.blocks():
            # ``allowed_parameters { ... }`` is the block form of a constraint: refused as its attribute
            # form is, never dropped; a path rule has no other block.
            if nested.block_type not in _REFUSED:
                raise InvalidRequest(
                    f"failed to parse policy: path {json.dumps(block.name_labels[0])}: "
                    f"{json.dumps(nested.block_type)} blocks are not supported"
                )
            attributes.setdefault(nested.block_type, []).append({})
        result.append((block.name_labels[0], attributes))
    return result


def _json_paths(text: str) -> list[tuple[str, Attributes]]:
    try:
        document = json.loads(text, object_pairs_hook=_Pairs)
    except json.JSONDecodeError as exc:
        raise InvalidRequest(f"failed to parse policy: invalid JSON at line {exc.lineno}") from None
    if not isinstance(document, _Pairs):
        raise InvalidRequest(_JSON_SHAPE)
    result = []
    for key, blocks in document:
        if key not in ("path", "name"):
            raise InvalidRequest(_ONLY_PATHS)
        if key == "name":
            continue
        if not isinstance(blocks, _Pairs):
            raise InvalidRequest(_JSON_SHAPE)
        for pattern, body in blocks:
            if not isinstance(body, _Pairs):
                raise InvalidRequest(f"failed to parse policy: path {json.dumps(pattern)}: expected a block")
            attributes: Attributes = {}
            for name, value in body:
                attributes.setdefault(name, []).append(value)
            result.append((pattern, attributes))
    return result


_ONLY_PATHS = "failed to parse policy: only 'path' blocks are supported"
_JSON_SHAPE = 'failed to parse policy: expected {"path": {"<pattern>": {...}}}'


def _unquote(value: Any) -> Any:
    """python-hcl2 keeps string literals quoted ('"read"')."""
    if isinstance(value, str) and len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1]
    return value


def _pattern(pattern: Any) -> str:
    if not isinstance(pattern, str) or not pattern or len(pattern) > 512:
        raise InvalidRequest("failed to parse policy: a path pattern must be a non-empty string")
    stripped = pattern.lstrip("/")
    if "+*" in stripped:
        raise InvalidRequest(_in_vaults_words(pattern, "invalid use of wildcards ('+*' is forbidden)"))
    if "*" in stripped[:-1]:
        raise InvalidRequest("failed to parse policy: '*' may only end a path pattern")
    return stripped


def _in_vaults_words(pattern: str, problem: str) -> str:
    """Vault's form of a path's error: the pattern as written, then as read (without its leading '/')."""
    return f"failed to parse policy: path {json.dumps(pattern)}: path {json.dumps(pattern.lstrip('/'))}: {problem}"


def _last(body: Attributes, name: str) -> Any:
    """The value of an attribute that holds one value: the last one given."""
    values = body.get(name)
    return _unquote(values[-1]) if values else None


def _wrapping_limits(pattern: str, body: Attributes) -> tuple[int, int]:
    """A path block's min_wrapping_ttl and max_wrapping_ttl in seconds (0: not set), in Vault's words."""
    limits = []
    for name in ("min_wrapping_ttl", "max_wrapping_ttl"):
        raw = _last(body, name)
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


def _shown(value: Any) -> str:
    """A refused value for an error: short strings as they are."""
    return json.dumps(value) if isinstance(value, str) and len(value) <= 64 else '"..."'


def _capabilities(pattern: str, body: Attributes) -> Capability:
    for key in body:
        if key in _REFUSED:
            raise InvalidRequest(
                f"failed to parse policy: path {json.dumps(pattern)}: {key} is not supported by this server"
            )
    granted = Capability(0)
    # Every 'capabilities' given counts (Vault adds them up; a deny among them wins in the ACL).
    for values in body.get("capabilities", []):
        if values is None:
            continue
        if not isinstance(values, list):
            raise InvalidRequest(_in_vaults_words(pattern, "capabilities must be a list"))
        for raw in values:
            value = _unquote(raw)
            capability = CAPABILITIES.get(value) if isinstance(value, str) else None
            if capability is None:
                raise InvalidRequest(_in_vaults_words(pattern, f"invalid capability {_shown(value)}"))
            granted |= capability
    for raw in body.get("policy", []):
        legacy = _unquote(raw)
        if not isinstance(legacy, str) or legacy not in _LEGACY:
            raise InvalidRequest(_in_vaults_words(pattern, f"invalid policy {_shown(legacy)}"))
        granted |= _LEGACY[legacy]
    return granted


DEFAULT_POLICY_NAME = "default"
# Vault's default policy as Vault ships it, with the paths this server has. Every token but a root token
# carries it unless made with no_default_policy; it may be rewritten, not deleted.
DEFAULT_POLICY = """\
# Allow tokens to look up their own properties
path "auth/token/lookup-self" {
    capabilities = ["read"]
}

# Allow tokens to renew themselves
path "auth/token/renew-self" {
    capabilities = ["update"]
}

# Allow tokens to revoke themselves
path "auth/token/revoke-self" {
    capabilities = ["update"]
}

# Allow a token to look up its own capabilities on a path
path "sys/capabilities-self" {
    capabilities = ["update"]
}

# Allow a token to wrap arbitrary values in a response-wrapping token
path "sys/wrapping/wrap" {
    capabilities = ["update"]
}

# Allow a token to look up the creation time and TTL of a given
# response-wrapping token
path "sys/wrapping/lookup" {
    capabilities = ["update"]
}

# Allow a token to unwrap a response-wrapping token. This is a convenience to
# avoid client token swapping since this is also part of the response wrapping
# policy.
path "sys/wrapping/unwrap" {
    capabilities = ["update"]
}
"""


def token_policy_names(
    requested: Iterable[str], *, no_default_policy: bool = False, parent: Iterable[str] | None = None
) -> tuple[str, ...]:
    """A new token's policies as Vault records them: sorted, once each; ``root`` alone when named; ``default``
    added unless ``no_default_policy`` (then removed even when named) or the parent (None: the operator or a
    root token) lacks it itself."""
    names = set(requested)
    if "root" in names:
        return ("root",)
    parent_names = None if parent is None else set(parent)
    if no_default_policy:
        names.discard(DEFAULT_POLICY_NAME)
    elif parent_names is None or "root" in parent_names or DEFAULT_POLICY_NAME in parent_names:
        names.add(DEFAULT_POLICY_NAME)
    return tuple(sorted(names))
