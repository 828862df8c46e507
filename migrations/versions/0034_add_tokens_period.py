"""Add tokens.period: Vault's periodic tokens, whose every renewal sets the TTL to the period.

Revision ID: 0034
Revises: 0033a

One change per revision, with a downgrade. The column has a server default (0: not periodic), so the previous
release's inserts keep working while nodes roll over.
"""

import sqlalchemy as sa
from alembic import op

revision = "0034"
down_revision = "0033a"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Plain ADD COLUMN, never a batch rebuild: rebuilding tokens would cascade into token_policies.
    op.add_column(
        "tokens",
        sa.Column(
            "period",
            sa.Integer(),
            nullable=False,
            server_default="0",
            comment="Vault's period in seconds: each renewal sets the TTL to it; 0: not periodic",
        ),
    )


def downgrade() -> None:
    op.drop_column("tokens", "period")
