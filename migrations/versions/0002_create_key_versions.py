"""Create key_versions: one row per key version, sealed material.

Revision ID: 0002
Revises: 0001

One change per revision, with a downgrade. Several nodes may run the previous release against the same
database while this one rolls out: keep every change compatible with the code before it.
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "key_versions",
        sa.Column("key_id", sa.Integer(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column(
            "sealed_material",
            sa.LargeBinary(),
            nullable=False,
            comment="XChaCha20-Poly1305(master key, nonce ‖ ciphertext), bound to key name and version",
        ),
        sa.Column("master_key_id", sa.String(length=16), nullable=False, comment="Which master key sealed this row"),
        sa.Column("public_key", sa.Text(), nullable=True, comment="PEM public key (asymmetric types only)"),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("version >= 1", name=op.f("ck_key_versions_version_positive")),
        sa.ForeignKeyConstraint(["key_id"], ["keys.id"], name=op.f("fk_key_versions_key_id_keys"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("key_id", "version", name=op.f("pk_key_versions")),
        comment="One row per key version (rotation inserts one); material sealed under the master key",
    )


def downgrade() -> None:
    op.drop_table("key_versions")
