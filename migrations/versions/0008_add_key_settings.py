"""Add Vault's remaining key settings to keys: min_available_version, auto_rotate_period, derived,
convergent_encryption (one column per KeySettings field).

Revision ID: 0008
Revises: 0007

One change per revision, with a downgrade. Several nodes may run the previous release against the same
database while this one rolls out: keep every change compatible with the code before it.
Existing keys get Vault's defaults, which are what they behaved as.
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

COLUMNS = (
    (
        "min_available_version",
        sa.Integer(),
        "0",
        "Versions below this were trimmed (deleted for good); 0 = none trimmed",
    ),
    ("auto_rotate_period", sa.Integer(), "0", "Seconds between automatic rotations; 0 = never"),
    ("derived", sa.Boolean(), sa.false(), "Per-context keys (Vault's HKDF)"),
    (
        "convergent_encryption",
        sa.Boolean(),
        sa.false(),
        "Same plaintext and context give the same ciphertext (needs derived)",
    ),
)


def upgrade() -> None:
    # Plain ADD COLUMN on both databases (no table rebuild): existing rows take Vault's default.
    for name, type_, default, comment in COLUMNS:
        op.add_column("keys", sa.Column(name, type_, nullable=False, server_default=default, comment=comment))


def downgrade() -> None:
    # Plain DROP COLUMN (SQLite >= 3.35): rebuilding `keys` would cascade into key_versions.
    for name, *_ in reversed(COLUMNS):
        op.drop_column("keys", name)
