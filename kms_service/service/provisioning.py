"""What provisioning a services YAML would change in a database: the plan ``serve`` carries out and
``kms-service config check`` prints. Endpoints the YAML no longer names are removed (with their tokens)
only when the operator says so (``serve --prune``); keys are never removed by a configuration change."""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy.ext.asyncio import AsyncSession

from kms_service.acl import policy_name
from kms_service.config import ServiceConfig
from kms_service.mounts import DEFAULT_MOUNT
from kms_service.storage import repository as repo


@dataclass(frozen=True)
class Plan:
    keys_to_create: dict[str, str] = field(default_factory=dict)  # name → key type
    type_conflicts: dict[str, tuple[str, str]] = field(default_factory=dict)  # name → (stored, wanted)
    endpoints_to_add: tuple[str, ...] = ()
    endpoints_to_remove: dict[str, int] = field(default_factory=dict)  # name → its tokens
    grants_to_add: dict[str, tuple[str, ...]] = field(default_factory=dict)  # endpoint → policy names
    grants_to_remove: dict[str, tuple[str, ...]] = field(default_factory=dict)

    @property
    def changes(self) -> bool:
        return bool(
            self.keys_to_create
            or self.endpoints_to_add
            or self.endpoints_to_remove
            or self.grants_to_add
            or self.grants_to_remove
        )

    def lines(self) -> list[str]:
        out = [f"create key {name} ({key_type})" for name, key_type in sorted(self.keys_to_create.items())]
        out += [
            f"refuse: key {name} is {stored} in the database, {wanted} in the file (a key's type never changes)"
            for name, (stored, wanted) in sorted(self.type_conflicts.items())
        ]
        out += [f"create endpoint {name}" for name in self.endpoints_to_add]
        for endpoint, names in sorted(self.grants_to_add.items()):
            out.append(f"grant {endpoint}: {', '.join(names)}")
        for endpoint, names in sorted(self.grants_to_remove.items()):
            out.append(f"revoke from {endpoint}: {', '.join(names)}")
        for endpoint, tokens in sorted(self.endpoints_to_remove.items()):
            out.append(f"remove endpoint {endpoint} and its {tokens} token(s) (only with --prune)")
        return out

    def removal_refusal(self, source: str) -> str:
        """The one-line error of ``serve`` without ``--prune`` when the file drops endpoints."""
        names = ", ".join(sorted(self.endpoints_to_remove))
        tokens = sum(self.endpoints_to_remove.values())
        return (
            f"{source} drops endpoint(s) {names}, which the database holds with {tokens} token(s); nothing was "
            "changed: restore them in the file, or pass --prune to remove them and their tokens "
            "('kms-service config check FILE' shows the whole plan)"
        )


async def plan(session: AsyncSession, config: ServiceConfig) -> Plan:
    keys_to_create, conflicts = {}, {}
    transit = await repo.get_mount(session, DEFAULT_MOUNT)  # the services YAML's keys live in transit/
    for name, key_type in config.keys().items():
        stored = None if transit is None else await repo.key_type_of(session, transit.id, name)
        if stored is None:
            keys_to_create[name] = key_type
        elif stored != key_type:
            conflicts[name] = (stored, key_type)
    existing = await repo.endpoint_grants(session)
    add, grant, revoke = [], {}, {}
    for endpoint, grants in config.endpoints.items():
        wanted = {policy_name(g.policy, g.key) for g in grants}
        if endpoint not in existing:
            add.append(endpoint)
            grant[endpoint] = tuple(sorted(wanted))
            continue
        current = existing[endpoint][0]
        if wanted - current:
            grant[endpoint] = tuple(sorted(wanted - current))
        if current - wanted:
            revoke[endpoint] = tuple(sorted(current - wanted))
    remove = {name: tokens for name, (_, tokens) in existing.items() if name not in config.endpoints}
    return Plan(keys_to_create, conflicts, tuple(add), remove, grant, revoke)


def plan_for_empty_database(config: ServiceConfig) -> Plan:
    return Plan(
        keys_to_create=dict(config.keys()),
        endpoints_to_add=tuple(config.endpoints),
        grants_to_add={
            e: tuple(sorted({policy_name(g.policy, g.key) for g in gs})) for e, gs in config.endpoints.items()
        },
    )
