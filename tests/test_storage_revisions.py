"""The read-only opening reads the schema's revisions without Alembic: they are Alembic's."""

from __future__ import annotations

import asyncio

from alembic.script import ScriptDirectory

from kms_service.storage import migrate, revisions
from kms_service.storage.database import create_engine


def test_the_head_is_alembics():
    assert revisions.head_revision() == ScriptDirectory.from_config(migrate.alembic_config()).get_current_head()


def test_a_databases_revision_is_alembics(database_url):
    async def both() -> tuple[str | None, str | None]:
        engine = create_engine(database_url)
        try:
            return await revisions.database_revision(engine), await migrate.current_revision(engine)
        finally:
            await engine.dispose()

    ours, alembics = asyncio.run(both())
    assert ours == alembics == revisions.head_revision()


def test_a_database_never_written_has_no_revision(tmp_path):
    async def read() -> str | None:
        engine = create_engine(f"sqlite:///{tmp_path / 'new.db'}")
        try:
            return await revisions.database_revision(engine)
        finally:
            await engine.dispose()

    assert asyncio.run(read()) is None
