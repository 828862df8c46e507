"""Create token_policies: policies of operator tokens.

Revision ID: 0006
Revises: 0005

One change per revision, with a downgrade. Several nodes may run the previous release against the same
database while this one rolls out: keep every change compatible with the code before it.
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "token_policies",
        sa.Column("token_id", sa.Integer(), nullable=False),
        sa.Column("policy", sa.String(length=160), nullable=False),
        sa.ForeignKeyConstraint(
            ["token_id"], ["tokens.id"], name=op.f("fk_token_policies_token_id_tokens"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("token_id", "policy", name=op.f("pk_token_policies")),
        comment="Policies of operator tokens: 'root' or '<policy>:<key>'",
    )


def downgrade() -> None:
    op.drop_table("token_policies")
