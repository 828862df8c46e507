"""Add engine_settings.mount_id: each transit mount has its own config/keys and cache-config.

Revision ID: 0022
Revises: 0021

One change per revision, with a downgrade. Several nodes may run the previous release against the same
database while this one rolls out: keep every change compatible with the code before it (its rows are
transit/'s, mount 1).
"""

import sqlalchemy as sa
from alembic import op

revision = "0022"
down_revision = "0021"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("engine_settings") as batch:
        batch.add_column(
            sa.Column("mount_id", sa.Integer(), nullable=False, server_default="1", comment="Whose setting: a mount")
        )
        batch.drop_constraint(op.f("pk_engine_settings"), type_="primary")
        batch.create_primary_key(op.f("pk_engine_settings"), ["mount_id", "name"])
        batch.create_foreign_key(
            op.f("fk_engine_settings_mount_id_mounts"), "mounts", ["mount_id"], ["id"], ondelete="CASCADE"
        )
        batch.alter_column(
            "name",
            existing_type=sa.String(length=64),
            existing_nullable=False,
            comment="e.g. disable_upsert, cache_size",
        )


def downgrade() -> None:
    op.execute("DELETE FROM engine_settings WHERE mount_id <> 1")
    with op.batch_alter_table("engine_settings") as batch:
        batch.drop_constraint(op.f("fk_engine_settings_mount_id_mounts"), type_="foreignkey")
        batch.drop_constraint(op.f("pk_engine_settings"), type_="primary")
        batch.create_primary_key(op.f("pk_engine_settings"), ["name"])
        batch.drop_column("mount_id")
