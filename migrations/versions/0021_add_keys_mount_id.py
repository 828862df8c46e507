"""Add keys.mount_id: each key belongs to a mount; names are unique per mount, not overall.

Revision ID: 0021
Revises: 0020

One change per revision, with a downgrade. Several nodes may run the previous release against the same
database while this one rolls out: keep every change compatible with the code before it (its inserts name
no mount, so the column defaults to transit/, mount 1).
"""

import sqlalchemy as sa
from alembic import op

revision = "0021"
down_revision = "0020"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # On SQLite this rebuilds keys; the migration runner turns foreign keys off first, so dropping the old
    # table cascades into nothing (key_versions and policies keep their rows).
    with op.batch_alter_table("keys") as batch:
        batch.add_column(
            sa.Column(
                "mount_id",
                sa.Integer(),
                nullable=False,
                server_default="1",
                comment="The transit mount holding the key",
            )
        )
        batch.create_foreign_key(op.f("fk_keys_mount_id_mounts"), "mounts", ["mount_id"], ["id"], ondelete="RESTRICT")
        batch.drop_constraint(op.f("uq_keys_name"), type_="unique")
        batch.create_unique_constraint("uq_keys_mount_id_name", ["mount_id", "name"])
        batch.alter_column(
            "name",
            existing_type=sa.String(length=128),
            existing_nullable=False,
            comment="Key name as used in API paths, unique in its mount",
            existing_comment="Key name as used in API paths",
        )


def downgrade() -> None:
    with op.batch_alter_table("keys") as batch:
        batch.alter_column(
            "name",
            existing_type=sa.String(length=128),
            existing_nullable=False,
            comment="Key name as used in API paths",
            existing_comment="Key name as used in API paths, unique in its mount",
        )
        batch.drop_constraint("uq_keys_mount_id_name", type_="unique")
        batch.create_unique_constraint(op.f("uq_keys_name"), ["name"])
        batch.drop_constraint(op.f("fk_keys_mount_id_mounts"), type_="foreignkey")
        batch.drop_column("mount_id")
