"""Create master_key_rollover: a master-key rotation in progress, the new key and the old sealed each under the other.

Revision ID: 0031
Revises: 0028

One change per revision, with a downgrade. Several nodes may run the previous release against the same
database while this one rolls out: keep every change compatible with the code before it (the previous
release never reads nor writes this table; finish a rotation before going back to it).
"""

import sqlalchemy as sa
from alembic import op

revision = "0031"
down_revision = "0030"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "master_key_rollover",
        sa.Column("new_key_id", sa.String(length=16), nullable=False, comment="The key that seals from now on"),
        sa.Column("old_key_id", sa.String(length=16), nullable=False, comment="The key being retired"),
        sa.Column(
            "new_key_sealed", sa.LargeBinary(), nullable=False, comment="The new master key sealed under the old"
        ),
        sa.Column(
            "old_key_sealed", sa.LargeBinary(), nullable=False, comment="The old master key sealed under the new"
        ),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("new_key_id", name=op.f("pk_master_key_rollover")),
        comment="A master-key rotation in progress (at most one row): the new key sealed under the old and the "
        "old under the new, so a node holding either key opens every row until the re-seal ends",
    )


def downgrade() -> None:
    bind = op.get_bind()
    if bind.execute(sa.text("SELECT count(*) FROM master_key_rollover")).scalar():
        raise RuntimeError("a master-key rotation is under way: finish it ('kms-service master-key rotate --finish')")
    op.drop_table("master_key_rollover")
