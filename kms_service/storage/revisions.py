"""The read-only opening of a database: as it is (never created, never migrated), checked to be at this
release's schema revision. It reads the revisions without loading Alembic, whose import alone costs a
command that only reads most of its start: the head from the migration files' ``revision`` and
``down_revision`` (tests/test_storage_revisions.py checks it is Alembic's head), the database's from
``alembic_version``."""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

from sqlalchemy import inspect, text
from sqlalchemy.ext.asyncio import AsyncEngine

from kms_service import migrations
from kms_service.errors import ConfigError
from kms_service.storage.database import Database, create_engine

VERSIONS_DIR = Path(migrations.__file__).resolve().parent / "versions"
NOT_CURRENT = "the database schema is not at this release's revision: run 'kms-service migrate' first"


def _declared(path: Path) -> dict[str, object]:
    """A migration file's module-level ``revision`` and ``down_revision``."""
    values: dict[str, object] = {}
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        target = node.targets[0] if isinstance(node, ast.Assign) and len(node.targets) == 1 else None
        if isinstance(node, ast.AnnAssign):
            target = node.target
        if isinstance(target, ast.Name) and target.id in ("revision", "down_revision") and node.value is not None:
            values[target.id] = ast.literal_eval(node.value)
    return values


@cache
def head_revision() -> str:
    """This release's newest revision: the one no other revision revises."""
    revisions, revised = set(), set()
    for path in VERSIONS_DIR.glob("*.py"):
        declared = _declared(path)
        if "revision" not in declared:
            continue
        revisions.add(declared["revision"])
        down = declared.get("down_revision")
        revised.update(down if isinstance(down, tuple | list) else () if down is None else (down,))
    heads = revisions - revised
    if len(heads) != 1:
        raise RuntimeError(f"the migrations have {len(heads)} heads, not one")
    return str(heads.pop())


async def database_revision(engine: AsyncEngine) -> str | None:
    """The database's revision; None for a database this service never wrote to."""
    async with engine.connect() as connection:
        if not await connection.run_sync(lambda sync: inspect(sync).has_table("alembic_version")):
            return None
        return (await connection.execute(text("SELECT version_num FROM alembic_version"))).scalar()


async def open_existing(url: str) -> Database:
    """The database at ``url`` for a command that only reads: never created, never migrated, no master key
    needed; refused unless at this release's revision."""
    engine = create_engine(url, create=False)
    try:
        if await database_revision(engine) != head_revision():
            raise ConfigError(NOT_CURRENT)
    except BaseException:
        await engine.dispose()
        raise
    return Database(engine)
