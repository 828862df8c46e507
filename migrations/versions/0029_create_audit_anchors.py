"""Create audit_anchors: the head of each audit chain, recorded periodically.

Revision ID: 0029
Revises: 0028

One change per revision, with a downgrade. Several nodes may run the previous release against the same
database while this one rolls out: keep every change compatible with the code before it (the previous
release never reads nor writes this table).
"""

import sqlalchemy as sa
from alembic import op

revision = "0029"
down_revision = "0028"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "audit_anchors",
        sa.Column("chain_id", sa.String(length=64), nullable=False, comment="The chain's id (in its records)"),
        sa.Column("sink", sa.String(length=16), nullable=False, comment="file or db"),
        sa.Column("seq", sa.BigInteger(), nullable=False, comment="The last record written and flushed"),
        sa.Column("hash", sa.String(length=64), nullable=False, comment="That record's hash (HMAC-SHA256, hex)"),
        sa.Column("closed", sa.Boolean(), nullable=False, comment="The writer ended the chain cleanly"),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("chain_id", name=op.f("pk_audit_anchors")),
        comment="The head of each audit chain (one writer process, one sink), recorded periodically: "
        "'kms-service audit verify' shows records cut off before it",
    )


def downgrade() -> None:
    op.drop_table("audit_anchors")
