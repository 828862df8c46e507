"""Drop endpoint_grants: endpoint_policies (0013) replaces it.

Revision ID: 0014
Revises: 0013

One change per revision, with a downgrade. Several nodes may run the previous release against the same
database while this one rolls out: keep every change compatible with the code before it.
Nodes of the previous release read endpoint_grants: upgrade every node sharing a database together (0009
already requires it). The downgrade rebuilds the table from endpoint_policies' built-in policies.
"""

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_table("endpoint_grants")


def downgrade() -> None:
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
    op.execute(
        """
        INSERT INTO endpoint_grants (endpoint_id, policy, key_id)
        SELECT ep.endpoint_id, p.template, p.key_id
        FROM endpoint_policies ep JOIN policies p ON p.id = ep.policy_id
        WHERE p.template IS NOT NULL
        """
    )
