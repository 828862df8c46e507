"""Add keys.allow_imported_key_rotation (Vault's allow_rotation for imported keys).

Revision ID: 0018
Revises: 0017

One change per revision, with a downgrade. Several nodes may run the previous release against the same
database while this one rolls out: keep every change compatible with the code before it.
"""

import sqlalchemy as sa
from alembic import op

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "keys",
        sa.Column(
            "allow_imported_key_rotation",
            sa.Boolean(),
            nullable=False,
            server_default=sa.false(),
            comment="An imported key may be rotated here (Vault's allow_rotation)",
        ),
    )


def downgrade() -> None:
    # Plain DROP COLUMN (SQLite >= 3.35): rebuilding keys would cascade into key_versions.
    op.drop_column("keys", "allow_imported_key_rotation")
