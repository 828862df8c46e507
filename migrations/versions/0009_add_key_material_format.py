"""Add key_versions.material_format: which layout the sealed material has.

Revision ID: 0009
Revises: 0008

One change per revision, with a downgrade. Several nodes may run the previous release against the same
database while this one rolls out: keep every change compatible with the code before it.
Existing rows are marked 0 (a sealed raw key). The service, which alone holds the master key, re-seals them
as envelopes (format 1, with a per-version HMAC key) at its next start, in one transaction. Nodes of the
previous release cannot read format 1: upgrade every node sharing a database together.
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

COMMENT = (
    "1: sealed envelope (key, HMAC key, public key, origin); 0: a pre-envelope raw key, upgraded at the next start"
)


def upgrade() -> None:
    with op.batch_alter_table("key_versions") as batch:
        batch.add_column(
            sa.Column("material_format", sa.Integer(), nullable=False, server_default="0", comment=COMMENT)
        )
    with op.batch_alter_table("key_versions") as batch:
        batch.alter_column("material_format", existing_type=sa.Integer(), server_default=None)


def downgrade() -> None:
    # Envelopes cannot be turned back into raw keys without the master key: refuse rather than corrupt.
    bind = op.get_bind()
    upgraded = bind.execute(sa.text("SELECT count(*) FROM key_versions WHERE material_format <> 0")).scalar()
    if upgraded:
        raise RuntimeError(
            f"{upgraded} key version(s) are stored as envelopes, which the previous release cannot read; "
            "restore a backup taken before the upgrade instead"
        )
    with op.batch_alter_table("key_versions") as batch:
        batch.drop_column("material_format")
