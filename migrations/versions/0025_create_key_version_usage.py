"""Create key_version_usage: per key version, encryptions, signatures and the time of last use.

Revision ID: 0025
Revises: 0024

One change per revision, with a downgrade. Several nodes may run the previous release against the same
database while this one rolls out: keep every change compatible with the code before it.
"""

import sqlalchemy as sa
from alembic import op

revision = "0025"
down_revision = "0024"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "key_version_usage",
        sa.Column("key_id", sa.Integer(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column(
            "encryptions",
            sa.BigInteger(),
            server_default=sa.text("0"),
            nullable=False,
            comment="Encryptions (and rewraps)",
        ),
        sa.Column("signatures", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True, comment="Within the flush interval"),
        sa.ForeignKeyConstraint(
            ["key_id", "version"],
            ["key_versions.key_id", "key_versions.version"],
            name="fk_key_version_usage_key_versions",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("key_id", "version", name=op.f("pk_key_version_usage")),
        comment="How much each key version was used. Nodes reserve counts in blocks before using them and give "
        "back what they did not use, so a crash can only overcount",
    )


def downgrade() -> None:
    op.drop_table("key_version_usage")
