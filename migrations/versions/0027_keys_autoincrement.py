"""keys ids are never reused on SQLite (AUTOINCREMENT), as PostgreSQL's sequence never reuses them.

Revision ID: 0027
Revises: 0026

Caches and usage counters hold a key by its id; without AUTOINCREMENT, SQLite gives a key made after the
newest one was deleted that same id, and a process could take the new key for the old.

One change per revision, with a downgrade. Several nodes may run the previous release against the same
database while this one rolls out: keep every change compatible with the code before it.
"""

from alembic import op

revision = "0027"
down_revision = "0026"
branch_labels = None
depends_on = None


def _rebuild(autoincrement: bool) -> None:
    if op.get_bind().dialect.name != "sqlite":
        return  # PostgreSQL: the id sequence never hands out a value twice already
    # Rebuilt with foreign keys off (the migration runner), so key_versions and policies keep their rows.
    with op.batch_alter_table("keys", recreate="always", table_kwargs={"sqlite_autoincrement": autoincrement}):
        pass


def upgrade() -> None:
    _rebuild(True)


def downgrade() -> None:
    _rebuild(False)
