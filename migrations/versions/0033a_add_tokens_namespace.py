"""Add tokens.namespace: the namespace a token was made in ('' the root), whose policies it carries.

Revision ID: 0033a
Revises: 0033

One change per revision, with a downgrade. Several nodes may run the previous release against the same
database while this one rolls out: keep every change compatible with the code before it (the column has a
server default, so the previous release's inserts make root-namespace tokens, as they are).
"""

import sqlalchemy as sa
from alembic import op

revision = "0033a"
down_revision = "0033"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Plain ADD COLUMN, never a batch rebuild: rebuilding tokens would cascade into token_policies.
    op.add_column(
        "tokens",
        sa.Column(
            "namespace",
            sa.String(length=300),
            nullable=False,
            server_default=sa.text("''"),
            comment="The namespace it was made in (ns1/; '' the root): its policies are that namespace's",
        ),
    )
    op.create_index(op.f("ix_tokens_namespace"), "tokens", ["namespace"], unique=False)


def downgrade() -> None:
    # A namespace's tokens would become root tokens of the same policy names: they go first.
    op.execute(sa.text("DELETE FROM tokens WHERE namespace <> ''"))
    op.drop_index(op.f("ix_tokens_namespace"), table_name="tokens")
    op.drop_column("tokens", "namespace")
