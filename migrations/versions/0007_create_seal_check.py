"""Create seal_check: master key check value.

Revision ID: 0007
Revises: 0006

One change per revision, with a downgrade. Several nodes may run the previous release against the same
database while this one rolls out: keep every change compatible with the code before it.
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "seal_check",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("master_key_id", sa.String(length=16), nullable=False),
        sa.Column("sealed_value", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("id = 1", name=op.f("ck_seal_check_single_row")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_seal_check")),
        comment="A known value sealed under the master key: a wrong master key is refused at start",
    )


def downgrade() -> None:
    op.drop_table("seal_check")
