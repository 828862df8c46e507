"""Add keys.retain_versions: version retention (keep the newest N versions decryptable).

Revision ID: 0023
Revises: 0022

One change per revision, with a downgrade. Several nodes may run the previous release against the same
database while this one rolls out: keep every change compatible with the code before it.
"""

import sqlalchemy as sa
from alembic import op

revision = "0023"
down_revision = "0022"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Plain ADD COLUMN, never a batch rebuild of keys.
    op.add_column(
        "keys",
        sa.Column(
            "retain_versions",
            sa.Integer(),
            nullable=False,
            server_default=sa.text("0"),
            comment="Keep the newest N versions decryptable; each rotation retires older",
        ),
    )


def downgrade() -> None:
    # Plain DROP COLUMN (SQLite >= 3.35), never a rebuild of keys.
    op.drop_column("keys", "retain_versions")
