"""Create audit_records: the database audit sink (serve --audit-db).

Revision ID: 0030
Revises: 0029

One change per revision, with a downgrade. Several nodes may run the previous release against the same
database while this one rolls out: keep every change compatible with the code before it (the previous
release never reads nor writes this table).
"""

import sqlalchemy as sa
from alembic import op

revision = "0030"
down_revision = "0029"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "audit_records",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("chain_id", sa.String(length=64), nullable=False, comment="The writer's chain"),
        sa.Column("seq", sa.BigInteger(), nullable=False, comment="Its place in the chain, from 1"),
        sa.Column("line", sa.Text(), nullable=False, comment="The record as the file sink writes it (JSON)"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_records")),
        sa.UniqueConstraint("chain_id", "seq", name=op.f("uq_audit_records_chain_id")),
        comment="The database audit sink (serve --audit-db): one JSON line per record, secrets hashed",
        sqlite_autoincrement=True,
    )


def downgrade() -> None:
    op.drop_table("audit_records")
