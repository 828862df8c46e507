"""Create token_roles: Vault's token roles (auth/token/roles/<name>), the rules auth/token/create/<name> applies.

Revision ID: 0034a
Revises: 0034

One change per revision, with a downgrade.
"""

import sqlalchemy as sa
from alembic import op

revision = "0034a"
down_revision = "0034"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "token_roles",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("namespace", sa.String(length=300), server_default=sa.text("''"), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column(
            "settings",
            sa.Text(),
            nullable=False,
            comment="The role's fields as Vault names them, a JSON object (policies, period, token_type, ...)",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_token_roles")),
        sa.UniqueConstraint("namespace", "name", name=op.f("uq_token_roles_namespace")),
        comment="Vault's token roles: what auth/token/create/<role> may grant, per namespace",
    )


def downgrade() -> None:
    op.drop_table("token_roles")
