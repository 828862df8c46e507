"""The operator's configuration: the platform's services YAML and an app's relationships. Pure.

Errors name the place (``vault-kms.configuration.endpoints.manage_keys[1].policy``) so an operator can fix
the file without reading code.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from kms_service.acl import POLICY_TEMPLATES
from kms_service.durations import DurationError, parse_seconds
from kms_service.errors import ConfigError
from kms_service.keyring import KEY_NAME_RE

log = logging.getLogger(__name__)

SERVICE_TYPE = "vault-kms"
SUPPORTED_VERSIONS = ("1.12", "1.6")
MIN_DISK_MB = 512
# Endpoint grant type → the Vault key type it provisions. Fixed forever once a key exists.
GRANT_KEY_TYPES = {"sign": "ecdsa-p256", "encrypt": "chacha20-poly1305"}
_NAME_RE = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_.-]{0,62}[A-Za-z0-9_])?", re.ASCII)


@dataclass(frozen=True)
class Grant:
    policy: str
    key: str
    type: str

    @property
    def key_type(self) -> str:
        return GRANT_KEY_TYPES[self.type]


@dataclass(frozen=True)
class ServiceConfig:
    name: str
    version: str
    disk: int | None
    endpoints: dict[str, tuple[Grant, ...]]

    @property
    def type(self) -> str:
        return f"{SERVICE_TYPE}:{self.version}"

    def keys(self) -> dict[str, str]:
        """key name → Vault key type, over every grant."""
        return {grant.key: grant.key_type for grants in self.endpoints.values() for grant in grants}


@dataclass(frozen=True)
class Relationship:
    name: str
    service: str
    endpoint: str


class DuplicateKey(yaml.YAMLError):
    def __init__(self, key: Any, line: int, first_line: int) -> None:
        super().__init__(f"line {line}: key '{key}' is given twice in one mapping (first on line {first_line})")
        self.line = line


class _StrictLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing a key given twice in one mapping: YAML would silently keep the last
    (an endpoint named twice would lose the first one's grants)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _value in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # '<<' merges a mapping in; keys after it may override its keys, as YAML means
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            try:
                if key in seen:
                    raise DuplicateKey(key, line, seen[key])
                seen[key] = line
            except TypeError:
                continue  # an unhashable key: the base class refuses it
        return super().construct_mapping(node, deep=deep)


def _load_yaml(path: Path) -> Any:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    try:
        return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 (a SafeLoader)
    except DuplicateKey as exc:
        raise ConfigError(f"{path}: {exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None


def load_service_config(path: Path) -> ServiceConfig:
    return parse_service_config(_load_yaml(path), str(path))


def parse_service_config(document: Any, source: str = "services YAML") -> ServiceConfig:
    if not isinstance(document, dict) or not document:
        raise ConfigError(f"{source}: expected a mapping of service name to service definition")
    services = [
        (name, body)
        for name, body in document.items()
        if isinstance(body, dict) and str(body.get("type", "")).split(":")[0] == SERVICE_TYPE
    ]
    if not services:
        raise ConfigError(f"{source}: no service of type '{SERVICE_TYPE}:<version>' is defined")
    if len(services) > 1:
        names = ", ".join(str(name) for name, _ in services)
        raise ConfigError(f"{source}: several {SERVICE_TYPE} services ({names}); one server serves one")
    name, body = services[0]
    where = f"{source}: {name}"
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        raise ConfigError(f"{where}: invalid service name")
    version = _parse_version(body["type"], f"{where}.type")
    disk = _parse_disk(body.get("disk"), f"{where}.disk")
    configuration = body.get("configuration")
    if not isinstance(configuration, dict):
        raise ConfigError(f"{where}.configuration: expected a mapping with 'endpoints'")
    endpoints_doc = configuration.get("endpoints")
    if not isinstance(endpoints_doc, dict) or not endpoints_doc:
        raise ConfigError(f"{where}.configuration.endpoints: expected a non-empty mapping of endpoint id to grants")
    endpoints: dict[str, tuple[Grant, ...]] = {}
    key_types: dict[str, tuple[str, str]] = {}
    for endpoint_id, grants_doc in endpoints_doc.items():
        ewhere = f"{where}.configuration.endpoints.{endpoint_id}"
        if not isinstance(endpoint_id, str) or not _NAME_RE.fullmatch(endpoint_id):
            raise ConfigError(f"{ewhere}: invalid endpoint id (letters, digits, '_', '-', '.')")
        if not isinstance(grants_doc, list) or not grants_doc:
            raise ConfigError(f"{ewhere}: expected a non-empty list of {{policy, key, type}}")
        grants = []
        for index, grant_doc in enumerate(grants_doc):
            gwhere = f"{ewhere}[{index}]"
            grant = _parse_grant(grant_doc, gwhere)
            earlier = key_types.setdefault(grant.key, (grant.type, gwhere))
            if earlier[0] != grant.type:
                raise ConfigError(
                    f"{gwhere}.type: key '{grant.key}' is given type '{grant.type}' here but "
                    f"'{earlier[0]}' at {earlier[1]}; a key has exactly one type"
                )
            if grant not in grants:
                grants.append(grant)
        endpoints[endpoint_id] = tuple(grants)
    return ServiceConfig(name=name, version=version, disk=disk, endpoints=endpoints)


def _parse_version(type_value: Any, where: str) -> str:
    match = re.fullmatch(rf"{SERVICE_TYPE}:([0-9]+\.[0-9]+)", str(type_value), re.ASCII)
    if not match:
        raise ConfigError(f"{where}: expected '{SERVICE_TYPE}:<major>.<minor>', e.g. '{SERVICE_TYPE}:1.12'")
    if match.group(1) not in SUPPORTED_VERSIONS:
        raise ConfigError(f"{where}: unsupported version {match.group(1)}; supported: {', '.join(SUPPORTED_VERSIONS)}")
    return match.group(1)


def _parse_disk(value: Any, where: str) -> int | None:
    if value is None:
        return None
    if type(value) is not int or value <= 0:
        raise ConfigError(f"{where}: expected a positive number of MB")
    if value < MIN_DISK_MB:
        log.warning("%s: %d MB is below the %d MB minimum for a vault-kms service", where, value, MIN_DISK_MB)
    return value


def _parse_grant(doc: Any, where: str) -> Grant:
    if not isinstance(doc, dict):
        raise ConfigError(f"{where}: expected a mapping {{policy, key, type}}")
    unknown = set(doc) - {"policy", "key", "type"}
    if unknown:
        raise ConfigError(f"{where}: unknown field(s) {', '.join(sorted(map(str, unknown)))}")
    for field in ("policy", "key", "type"):
        if not isinstance(doc.get(field), str):
            raise ConfigError(f"{where}.{field}: required, a string")
    if doc["policy"] not in POLICY_TEMPLATES:
        raise ConfigError(f"{where}.policy: unknown policy; use one of {', '.join(POLICY_TEMPLATES)}")
    if not KEY_NAME_RE.fullmatch(doc["key"]):
        raise ConfigError(f"{where}.key: invalid key name (ASCII letters, digits, '_', '-', '.'; at most 128)")
    if doc["type"] not in GRANT_KEY_TYPES:
        raise ConfigError(f"{where}.type: unknown type; use one of {', '.join(GRANT_KEY_TYPES)}")
    return Grant(policy=doc["policy"], key=doc["key"], type=doc["type"])


def load_relationships(path: Path) -> list[Relationship]:
    return parse_relationships(_load_yaml(path), str(path))


def parse_relationships(document: Any, source: str = "app YAML") -> list[Relationship]:
    if not isinstance(document, dict) or not isinstance(document.get("relationships"), dict):
        raise ConfigError(f"{source}: expected a 'relationships' mapping")
    result = []
    for name, target in document["relationships"].items():
        where = f"{source}: relationships.{name}"
        if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
            raise ConfigError(f"{where}: invalid relationship name")
        if isinstance(target, str):
            service, sep, endpoint = target.partition(":")
            if not sep or not service or not endpoint:
                raise ConfigError(f"{where}: expected 'service:endpoint'")
        elif isinstance(target, dict) and isinstance(target.get("service"), str):
            service, endpoint = target["service"], target.get("endpoint")
            if not isinstance(endpoint, str):
                raise ConfigError(f"{where}.endpoint: required, a string")
        else:
            raise ConfigError(f"{where}: expected 'service:endpoint' or {{service, endpoint}}")
        result.append(Relationship(name=name, service=service, endpoint=endpoint))
    return result


def parse_duration(text: str) -> int:
    """Seconds from ``8760h``, ``1h30m``, ``30d``, ``1.5h``, ``2s`` or a plain number of seconds; positive."""
    try:
        seconds = parse_seconds(text)
    except DurationError:
        raise ConfigError(f"invalid duration {text[:32]!r}: use e.g. 30s, 15m, 1h, 30d, 8760h") from None
    if seconds <= 0:
        raise ConfigError("a duration must be positive")
    return seconds
