"""Create keys: named transit keys.

Revision ID: 0001
Revises:

One change per revision, with a downgrade. Several nodes may run the previous release against the same
database while this one rolls out: keep every change compatible with the code before it.
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "keys",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False, comment="Key name as used in API paths"),
        sa.Column(
            "type",
            sa.String(length=32),
            nullable=False,
            comment="Vault key type, e.g. ecdsa-p256; never changes",
        ),
        sa.Column("latest_version", sa.Integer(), nullable=False, comment="Newest version; rotation adds one"),
        sa.Column(
            "min_decryption_version",
            sa.Integer(),
            nullable=False,
            comment="Ciphertexts/signatures of older versions are refused",
        ),
        sa.Column(
            "min_encryption_version",
            sa.Integer(),
            nullable=False,
            comment="Oldest version usable to encrypt/sign; 0 means latest only by default",
        ),
        sa.Column("deletion_allowed", sa.Boolean(), nullable=False),
        sa.Column("exportable", sa.Boolean(), nullable=False, comment="One-way: once true, stays true"),
        sa.Column("allow_plaintext_backup", sa.Boolean(), nullable=False, comment="One-way"),
        sa.Column(
            "generation",
            sa.Integer(),
            nullable=False,
            comment="Bumped by every change; caches on every node compare it",
        ),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("latest_version >= 1", name=op.f("ck_keys_latest_version_positive")),
        sa.CheckConstraint(
            "min_decryption_version >= 1 AND min_decryption_version <= latest_version",
            name=op.f("ck_keys_min_decryption_version_in_range"),
        ),
        sa.CheckConstraint(
            "min_encryption_version = 0 OR (min_encryption_version >= min_decryption_version AND min_encryption_version <= latest_version)",
            name=op.f("ck_keys_min_encryption_version_in_range"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_keys")),
        sa.UniqueConstraint("name", name=op.f("uq_keys_name")),
        comment="Named transit keys; one row per key. Key material lives in key_versions, sealed.",
    )


def downgrade() -> None:
    op.drop_table("keys")
