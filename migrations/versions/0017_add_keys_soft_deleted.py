"""Add keys.soft_deleted (OpenBao's soft delete).

Revision ID: 0017
Revises: 0016

One change per revision, with a downgrade. Several nodes may run the previous release against the same
database while this one rolls out: keep every change compatible with the code before it.
"""

import sqlalchemy as sa
from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "keys",
        sa.Column(
            "soft_deleted",
            sa.Boolean(),
            nullable=False,
            server_default=sa.false(),
            comment="OpenBao's soft delete: kept, refused for every use until restored",
        ),
    )


def downgrade() -> None:
    # Plain DROP COLUMN (SQLite >= 3.35): rebuilding keys would cascade into key_versions.
    op.drop_column("keys", "soft_deleted")
