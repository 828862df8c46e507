"""Create endpoint_grants: endpoint policy bindings.

Revision ID: 0004
Revises: 0003

One change per revision, with a downgrade. Several nodes may run the previous release against the same
database while this one rolls out: keep every change compatible with the code before it.
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "endpoint_grants",
        sa.Column("endpoint_id", sa.Integer(), nullable=False),
        sa.Column("policy", sa.String(length=16), nullable=False, comment="admin, sign, verify, ..."),
        sa.Column("key_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["endpoint_id"],
            ["endpoints.id"],
            name=op.f("fk_endpoint_grants_endpoint_id_endpoints"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["key_id"], ["keys.id"], name=op.f("fk_endpoint_grants_key_id_keys"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("endpoint_id", "policy", "key_id", name=op.f("pk_endpoint_grants")),
        comment="Policy bindings: endpoint may use policy on key (from the services YAML)",
    )


def downgrade() -> None:
    op.drop_table("endpoint_grants")
