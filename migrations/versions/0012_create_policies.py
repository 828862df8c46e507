"""Create policies: ACL policies by name (built-in templates bound to a key; documents later).

Revision ID: 0012
Revises: 0011

One change per revision, with a downgrade. Several nodes may run the previous release against the same
database while this one rolls out: keep every change compatible with the code before it.
"""

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "policies",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=160), nullable=False, comment="e.g. encrypt:payments; tokens name it"),
        sa.Column(
            "template", sa.String(length=16), nullable=True, comment="Built-in: admin, sign, verify, encrypt, ..."
        ),
        sa.Column("key_id", sa.Integer(), nullable=True, comment="The key a built-in template is bound to"),
        sa.Column("document", sa.Text(), nullable=True, comment="A policy document (HCL or JSON), when not built-in"),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "(template IS NOT NULL AND key_id IS NOT NULL AND document IS NULL) OR "
            "(template IS NULL AND key_id IS NULL AND document IS NOT NULL)",
            name=op.f("ck_policies_template_or_document"),
        ),
        sa.ForeignKeyConstraint(["key_id"], ["keys.id"], name=op.f("fk_policies_key_id_keys"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_policies")),
        sa.UniqueConstraint("name", name=op.f("uq_policies_name")),
        comment="ACL policies by name: a built-in template bound to one key, or a policy document",
    )
    op.create_index(op.f("ix_policies_key_id"), "policies", ["key_id"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_policies_key_id"), table_name="policies")
    op.drop_table("policies")
