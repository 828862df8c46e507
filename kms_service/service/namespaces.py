"""Namespaces (OpenBao's ``sys/namespaces``): create, update the custom metadata, delete.

Reads come from the mount table's cache (``MountService``: the namespaces are read with the mounts), and a
namespace change is recorded as a mount change, so every node re-reads both. Writes take the writers' lock,
as mount changes do, so a namespace and a mount can never be made over each other by two nodes at once.
"""

from __future__ import annotations

import json
import logging
import secrets
import string
import uuid
from datetime import UTC, datetime
from typing import Any

from kms_service.errors import InvalidRequest
from kms_service.namespaces import Namespace, child_path
from kms_service.service.invalidation import Change, Kind
from kms_service.service.mounts import MountService, namespace_of
from kms_service.storage import models as m
from kms_service.storage import repository as repo
from kms_service.storage.database import Database

log = logging.getLogger(__name__)

_ID_ALPHABET = string.ascii_letters + string.digits
ID_LENGTH = 6  # Vault's short namespace ids look like "zaTOit"


def _metadata(raw: Any) -> dict[str, str]:
    if raw is None:
        return {}
    if not isinstance(raw, dict) or not all(isinstance(v, str) for v in raw.values()):
        raise InvalidRequest("custom_metadata must be a map of strings")
    return {str(k): v for k, v in raw.items()}


class NamespaceService:
    def __init__(self, db: Database, mounts: MountService) -> None:
        self._db = db
        self._mounts = mounts

    async def list(self, parent: str) -> list[Namespace]:
        """The namespaces directly below ``parent``."""
        spaces = await self._mounts.namespaces()
        return [space for path, space in sorted(spaces.items()) if namespace_of(path) == parent]

    async def read(self, parent: str, name: str) -> Namespace | None:
        path = child_path(parent, name)
        return (await self._mounts.namespaces()).get(path)

    async def write(self, parent: str, name: str, custom_metadata: Any, create: bool = True) -> Namespace:
        """Create ``name`` in ``parent``, or set an existing one's custom metadata (Vault's PUT; ``create``
        False: only an existing one, else a 404)."""
        path = child_path(parent, name)
        metadata = _metadata(custom_metadata)
        async with self._db.writing() as session:
            await repo.serialize_writers(session)
            row = await repo.get_namespace(session, path)
            if row is None and not create:
                raise InvalidRequest("namespace not found")
            if row is None:
                if parent and await repo.get_namespace(session, parent) is None:
                    raise InvalidRequest(f"parent namespace {parent} does not exist")
                for mount in await repo.list_mounts(session):
                    if mount.path == path[:-1] or mount.path.startswith(path):
                        raise InvalidRequest(
                            f"new namespace conflicts with existing mount: {mount.path.removeprefix(parent)}/"
                        )
                row = await repo.add_namespace(
                    session,
                    m.Namespace(
                        path=path,
                        public_id="".join(secrets.choice(_ID_ALPHABET) for _ in range(ID_LENGTH)),
                        uuid=str(uuid.uuid4()),
                        custom_metadata=json.dumps(metadata, sort_keys=True),
                        created_at=datetime.now(UTC),
                    ),
                )
                log.info("created namespace %s", path)
            elif custom_metadata is not None:
                row.custom_metadata = json.dumps(metadata, sort_keys=True)
                await session.flush()
            space = Namespace(row.path, row.public_id, row.uuid, row.created_at, json.loads(row.custom_metadata))
            self._db.changed(session, Change(Kind.MOUNT, path))
        return space

    async def delete(self, parent: str, name: str) -> bool:
        """Delete an empty namespace (no namespace, no mount below it), its policies and its tokens with it.
        False: there was none."""
        path = child_path(parent, name)
        async with self._db.writing() as session:
            await repo.serialize_writers(session)
            row = await repo.get_namespace(session, path)
            if row is None:
                return False
            if any(other.path.startswith(path) and other.path != path for other in await repo.list_namespaces(session)):
                raise InvalidRequest("unable to delete namespace containing child namespaces")
            mounts = [mount.path for mount in await repo.list_mounts(session) if mount.path.startswith(path)]
            if mounts:
                shown = ", ".join(f"{mount.removeprefix(path)}/" for mount in mounts)
                raise InvalidRequest(f"unable to delete namespace containing mounts ({shown}): disable them first")
            revoked = await repo.delete_namespace(session, row)
            self._db.changed(
                session,
                Change(Kind.MOUNT, path),
                Change(Kind.POLICY),
                *(Change(Kind.TOKEN, accessor) for accessor in revoked),
            )
        log.info("deleted namespace %s (%d token(s) revoked)", path, len(revoked))
        return True
