"""Alembic environment: runs on a connection handed over by kms_service.storage.migrate, or (for the
alembic CLI) opens one from KMS_DATABASE_URL / the default SQLite file."""

import asyncio
import os
from pathlib import Path

from alembic import context
from sqlalchemy.engine import Connection

from kms_service.storage.database import create_engine, default_database_url
from kms_service.storage.migrate import foreign_keys_off
from kms_service.storage.models import Base

config = context.config
target_metadata = Base.metadata
# Any constant: nodes sharing one PostgreSQL take turns migrating it.
MIGRATION_LOCK_ID = 0x6B6D735F6D6967


def do_run_migrations(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
        compare_server_default=True,
    )
    with context.begin_transaction():
        if connection.dialect.name == "postgresql":
            connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK_ID})")
        context.run_migrations()


async def run_async_migrations() -> None:
    url = os.environ.get("KMS_DATABASE_URL") or default_database_url(Path(os.environ.get("KMS_DATA_DIR", "data")))
    engine = create_engine(url)
    try:
        async with engine.connect() as connection, foreign_keys_off(connection), connection.begin():
            await connection.run_sync(do_run_migrations)
    finally:
        await engine.dispose()


if context.is_offline_mode():
    raise SystemExit("offline (--sql) migrations are not supported; run against a database")

connection = config.attributes.get("connection")
if connection is None:
    asyncio.run(run_async_migrations())
else:
    do_run_migrations(connection)
