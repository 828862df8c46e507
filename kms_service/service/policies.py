"""Policies by name: the ACL a token's policy names add up to.

Built-in policies are templates bound to one key (``encrypt:payments``); their rules follow from the
name, and provisioning records them in the ``policies`` table so endpoints reference them by id. Policy
documents (Vault's HCL or JSON, ``sys/policies/acl``) are rows with a ``document``. ``root`` is the
operator's all-powerful policy: it cannot be written or deleted, nor can a built-in template's name.

A namespace's policy documents are stored under the namespace's path (``ns1/p1``; a policy name holds no
slash, so these never meet a root policy's name); every method takes the namespace (``""``: the root) and
the name as that namespace knows it. ``root`` is the root namespace's only.

A document's name is lowercased, as Vault does, when it is written, read, deleted or named by a token; a
document stored under a name with capitals (written before names were lowercased) is still found by it.
Built-in template names keep their case: a key's name is case-sensitive.

``default`` is Vault's default policy (``policy_documents.DEFAULT_POLICY``): every namespace has it, as
shipped until rewritten; it cannot be deleted. The first start of a server that has it stores it in the root
namespace and gives it to the tokens made before (they could use its paths: they stay able to).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable
from datetime import UTC, datetime

from sqlalchemy.ext.asyncio import AsyncSession

from kms_service import policy_documents
from kms_service.acl import ACL, ROOT_POLICY, Policy, parse_policy
from kms_service.errors import InvalidRequest
from kms_service.policy_documents import DEFAULT_POLICY, DEFAULT_POLICY_NAME, capability_names
from kms_service.service.invalidation import Change, Invalidator, Kind
from kms_service.storage import models as m
from kms_service.storage import reports
from kms_service.storage import repository as repo
from kms_service.storage.database import Database

log = logging.getLogger(__name__)

POLICY_NAME_RE = re.compile(r"[A-Za-z0-9_.@-]{1,128}", re.ASCII)


def utcnow() -> datetime:
    return datetime.now(UTC)


def canonical_name(name: str) -> str:
    """The name a policy is known by: a document's is lowercased (Vault's rule), a template's kept."""
    return name if ":" in name else name.lower()


class PolicyService:
    def __init__(self, db: Database, invalidator: Invalidator) -> None:
        self._db = db
        self._cache: dict[str, Policy] = {}
        self._invalidator = invalidator
        invalidator.subscribe(Kind.POLICY, self._on_change)

    def _on_change(self, change: Change) -> None:
        if change.name is None:
            self._cache.clear()
        else:
            # The cache knows a document by its lowercased name; a row's may have capitals (see canonical_name).
            namespace, slash, name = change.name.rpartition("/")
            self._cache.pop(change.name, None)
            self._cache.pop(namespace + slash + canonical_name(name), None)

    async def resolve(self, name: str, namespace: str = "") -> Policy:
        if name == "root":
            return ROOT_POLICY if not namespace else Policy(name, ())
        if "/" in name:  # another namespace's policy is never named from here
            return Policy(name, ())
        stored = namespace + canonical_name(name)
        policy = self._cache.get(stored)
        if policy is not None:
            return policy
        epoch = self._invalidator.epoch
        try:
            policy = parse_policy(name)
        except InvalidRequest:
            async with self._db.reading() as session:
                row = await _document_row(session, namespace, name)
            if row is None and canonical_name(name) == DEFAULT_POLICY_NAME:
                policy = policy_documents.parse(name, DEFAULT_POLICY)
            else:
                # As in Vault, a policy name that resolves to nothing grants nothing.
                policy = policy_documents.parse(name, row.document) if row and row.document else Policy(name, ())
        if epoch == self._invalidator.epoch:  # else a change was published meanwhile: read again next time
            self._cache[stored] = policy
        return policy

    async def read(self, name: str, namespace: str = "") -> str | None:
        """A policy's document; built-in templates are described by their rules in HCL."""
        if name == "root":
            return "" if not namespace else None
        if "/" in name:
            return None
        async with self._db.reading() as session:
            row = await _document_row(session, namespace, name)
        if row is None:
            return DEFAULT_POLICY if canonical_name(name) == DEFAULT_POLICY_NAME else None
        if row.document is not None:
            return row.document
        policy = await self.resolve(name, namespace)
        return "\n".join(
            f'path "{rule.pattern}" {{ capabilities = {json.dumps(capability_names(rule.capabilities))} }}'
            for rule in policy.rules
        )

    async def exists(self, name: str, namespace: str = "") -> bool:
        """root, any built-in '<template>:<key>' (raises InvalidRequest for a malformed one), or a document."""
        if name == "root":
            return not namespace
        if ":" in name:
            parse_policy(name)
            return True
        if not POLICY_NAME_RE.fullmatch(name):
            return False
        if canonical_name(name) == DEFAULT_POLICY_NAME:
            return True
        async with self._db.reading() as session:
            return await _document_row(session, namespace, name) is not None

    async def names(self, namespace: str = "") -> list[str]:
        """The namespace's policy names (the root's include root)."""
        async with self._db.reading() as session:
            stored = await repo.policy_names(session)
        mine = [name[len(namespace) :] for name in stored if name.startswith(namespace)]
        builtin = (DEFAULT_POLICY_NAME,) if namespace else (DEFAULT_POLICY_NAME, "root")
        return sorted({*(name for name in mine if "/" not in name), *builtin})

    async def write(self, name: str, document: str, namespace: str = "") -> None:
        self._check_writable(name)
        policy_documents.parse(name, document)  # refuse a document that does not parse, before storing it
        async with self._db.writing() as session:
            row = await _document_row(session, namespace, name)
            if row is not None and row.document is None:
                raise InvalidRequest(f'cannot update built-in policy "{name}"')
            stored = row.name if row is not None else namespace + canonical_name(name)
            await repo.put_policy_document(session, stored, document, utcnow())
            self._db.changed(session, Change(Kind.POLICY, stored))

    async def delete(self, name: str, namespace: str = "") -> None:
        self._check_writable(name, "delete")
        if canonical_name(name) == DEFAULT_POLICY_NAME:
            raise InvalidRequest("cannot delete default policy")  # Vault's words
        async with self._db.writing() as session:
            row = await _document_row(session, namespace, name)
            if row is None:
                return  # Vault: deleting a missing policy succeeds
            if row.document is None:
                raise InvalidRequest(f'cannot delete built-in policy "{name}"')
            await repo.delete_policy(session, row)
            self._db.changed(session, Change(Kind.POLICY, row.name))

    @staticmethod
    def _check_writable(name: str, verb: str = "update") -> None:
        if canonical_name(name) == "root":
            raise InvalidRequest(f'cannot {verb} "root" policy')
        if ":" in name:
            raise InvalidRequest(f"cannot {verb} a built-in policy ('<template>:<key>' names are reserved)")
        if not POLICY_NAME_RE.fullmatch(name):
            raise InvalidRequest("invalid policy name: letters, digits, '_', '-', '.', '@', at most 128")

    async def ensure_default(self) -> None:
        """Store the default policy once; the tokens made before get it (see the module's docstring)."""
        async with self._db.reading() as session:
            if await repo.policy_document(session, DEFAULT_POLICY_NAME) is not None:
                return
        async with self._db.writing() as session:
            await repo.serialize_writers(session)
            if await repo.policy_document(session, DEFAULT_POLICY_NAME) is not None:
                return  # another node stored it meanwhile
            await repo.put_policy_document(session, DEFAULT_POLICY_NAME, DEFAULT_POLICY, utcnow())
            accessors = await repo.give_tokens_policy(session, DEFAULT_POLICY_NAME)
            self._db.changed(
                session, Change(Kind.POLICY, DEFAULT_POLICY_NAME), *(Change(Kind.TOKEN, a) for a in accessors)
            )
        if accessors:
            log.info("gave the default policy to %d token(s) made before it existed", len(accessors))

    async def acl(self, names: Iterable[str], namespace: str = "") -> ACL:
        return ACL([await self.resolve(name, namespace) for name in names])

    async def endpoints(self) -> list[dict[str, object]]:
        """The services YAML's endpoints: each one's grants (policy template and key) and its newest token's
        accessor and expiry, as the operators' view ``kms_endpoints`` shows them."""
        async with self._db.reading() as session:
            return reports.endpoints(await reports.endpoint_grants(session))


async def _document_row(session: AsyncSession, namespace: str, name: str) -> m.Policy | None:
    """The stored row of the policy ``name`` in ``namespace``: by its lowercased name, else (a document written
    before names were lowercased) by the name as given."""
    row = await repo.policy_document(session, namespace + canonical_name(name))
    if row is None and canonical_name(name) != name:
        row = await repo.policy_document(session, namespace + name)
    return row
