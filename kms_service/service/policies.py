"""Policies by name: the ACL a token's policy names add up to.

Built-in policies are templates bound to one key (``encrypt:payments``); their rules follow from the
name, and provisioning records them in the ``policies`` table so endpoints reference them by id. Policy
documents (the operator-surface issue) will be rows with a ``document``, parsed in ``resolve``; the cache
of resolved policies already drops a name when a change to it is published.
"""

from __future__ import annotations

from collections.abc import Iterable

from kms_service.acl import ACL, ROOT_POLICY, Policy, parse_policy
from kms_service.errors import InvalidRequest
from kms_service.service.invalidation import Change, Invalidator, Kind
from kms_service.storage.engine import Database


class PolicyService:
    def __init__(self, db: Database, invalidator: Invalidator) -> None:
        self._db = db
        self._cache: dict[str, Policy] = {}
        invalidator.subscribe(Kind.POLICY, self._on_change)

    def _on_change(self, change: Change) -> None:
        if change.name is None:
            self._cache.clear()
        else:
            self._cache.pop(change.name, None)

    async def resolve(self, name: str) -> Policy:
        if name == "root":
            return ROOT_POLICY
        policy = self._cache.get(name)
        if policy is not None:
            return policy
        try:
            policy = parse_policy(name)
        except InvalidRequest:
            # As in Vault, a policy name that resolves to nothing grants nothing.
            policy = Policy(name, ())
        self._cache[name] = policy
        return policy

    async def acl(self, names: Iterable[str]) -> ACL:
        return ACL([await self.resolve(name) for name in names])
