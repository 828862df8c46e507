"""Create change_log: on SQLite, recent committed changes for the other processes on the same file.

Revision ID: 0026
Revises: 0025

One change per revision, with a downgrade. Several nodes may run the previous release against the same
database while this one rolls out: keep every change compatible with the code before it (the previous
release never reads nor writes this table).
"""

import sqlalchemy as sa
from alembic import op

revision = "0026"
down_revision = "0025"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "change_log",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("payload", sa.Text(), nullable=False, comment="JSON: the writing process's node id and its changes"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_change_log")),
        comment="SQLite only: recent committed changes, read by the other processes on the same file to drop "
        "their cache entries (PostgreSQL uses LISTEN/NOTIFY instead)",
        sqlite_autoincrement=True,
    )


def downgrade() -> None:
    op.drop_table("change_log")
