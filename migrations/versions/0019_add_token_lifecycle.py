"""Add the tokens' Vault lifecycle: parent_accessor, num_uses, renewable, ttl, explicit_max_ttl, meta.

Revision ID: 0019
Revises: 0018

One change per revision, with a downgrade. Several nodes may run the previous release against the same
database while this one rolls out: keep every change compatible with the code before it (every column
has a server default, so the previous release's inserts stay valid).
"""

import sqlalchemy as sa
from alembic import op

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None

COLUMNS = (
    ("parent_accessor", sa.String(24), None, "Accessor of the token that created this one; NULL for orphans"),
    ("num_uses", sa.Integer(), sa.text("0"), "Uses left; 0 means unlimited"),
    ("renewable", sa.Boolean(), sa.false(), "Whether auth/token/renew may extend it"),
    ("ttl", sa.Integer(), sa.text("0"), "The creation TTL in seconds (what a renew extends by); 0: none"),
    ("explicit_max_ttl", sa.Integer(), sa.text("0"), "Hard limit on its life in seconds from creation; 0: none"),
    ("meta", sa.Text(), sa.text("'{}'"), "Vault's token metadata, a JSON object of strings"),
)


def upgrade() -> None:
    # Plain ADD COLUMN, never a batch rebuild: rebuilding tokens would cascade into token_policies.
    for name, type_, default, comment in COLUMNS:
        op.add_column(
            "tokens",
            sa.Column(name, type_, nullable=default is None, server_default=default, comment=comment),
        )
    op.create_index(op.f("ix_tokens_parent_accessor"), "tokens", ["parent_accessor"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_tokens_parent_accessor"), table_name="tokens")
    for name, *_ in reversed(COLUMNS):
        op.drop_column("tokens", name)
