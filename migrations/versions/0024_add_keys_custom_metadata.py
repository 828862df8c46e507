"""Add keys.custom_metadata: the operator's labels on a key (a JSON object of strings).

Revision ID: 0024
Revises: 0023

One change per revision, with a downgrade. Several nodes may run the previous release against the same
database while this one rolls out: keep every change compatible with the code before it.
"""

import sqlalchemy as sa
from alembic import op

revision = "0024"
down_revision = "0023"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Plain ADD COLUMN, never a batch rebuild of keys.
    op.add_column(
        "keys",
        sa.Column(
            "custom_metadata",
            sa.Text(),
            nullable=False,
            server_default=sa.text("'{}'"),
            comment="The operator's labels, a JSON object of strings",
        ),
    )


def downgrade() -> None:
    # Plain DROP COLUMN (SQLite >= 3.35), never a rebuild of keys.
    op.drop_column("keys", "custom_metadata")
