"""Create endpoint_policies (endpoint → policy by id), filled from endpoint_grants.

Revision ID: 0013
Revises: 0012

One change per revision, with a downgrade. Several nodes may run the previous release against the same
database while this one rolls out: keep every change compatible with the code before it.
Each (template, key) of endpoint_grants becomes a built-in policy named '<template>:<key>'.
"""

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "endpoint_policies",
        sa.Column("endpoint_id", sa.Integer(), nullable=False),
        sa.Column("policy_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["endpoint_id"],
            ["endpoints.id"],
            name=op.f("fk_endpoint_policies_endpoint_id_endpoints"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["policy_id"], ["policies.id"], name=op.f("fk_endpoint_policies_policy_id_policies"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("endpoint_id", "policy_id", name=op.f("pk_endpoint_policies")),
        comment="Which policies each endpoint's tokens carry (from the services YAML)",
    )
    op.create_index(op.f("ix_endpoint_policies_policy_id"), "endpoint_policies", ["policy_id"], unique=False)
    op.execute(
        """
        INSERT INTO policies (name, template, key_id, created_at, updated_at)
        SELECT DISTINCT g.policy || ':' || k.name, g.policy, g.key_id, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP
        FROM endpoint_grants g JOIN keys k ON k.id = g.key_id
        """
    )
    op.execute(
        """
        INSERT INTO endpoint_policies (endpoint_id, policy_id)
        SELECT g.endpoint_id, p.id
        FROM endpoint_grants g JOIN policies p ON p.template = g.policy AND p.key_id = g.key_id
        """
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_endpoint_policies_policy_id"), table_name="endpoint_policies")
    op.drop_table("endpoint_policies")
