"""Create namespaces: tenants (OpenBao's sys/namespaces), each with its own mounts, policies and tokens.

Revision ID: 0033
Revises: 0032

One change per revision, with a downgrade. Several nodes may run the previous release against the same
database while this one rolls out: keep every change compatible with the code before it (the previous
release never reads this table; create namespaces only once every node runs this release).
"""

import sqlalchemy as sa
from alembic import op

revision = "0033"
down_revision = "0032"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "namespaces",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column(
            "path",
            sa.String(length=300),
            nullable=False,
            comment="The namespace's full path with a trailing slash: ns1/, ns1/child/",
        ),
        sa.Column("public_id", sa.String(length=16), nullable=False, comment="Vault's short namespace id"),
        sa.Column("uuid", sa.String(length=36), nullable=False),
        sa.Column("custom_metadata", sa.Text(), nullable=False, comment="Vault's custom_metadata (JSON)"),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_namespaces")),
        sa.UniqueConstraint("path", name=op.f("uq_namespaces_path")),
        sa.UniqueConstraint("public_id", name=op.f("uq_namespaces_public_id")),
        sa.UniqueConstraint("uuid", name=op.f("uq_namespaces_uuid")),
        comment="Tenants (OpenBao's sys/namespaces); their mounts and policies are stored under their path "
        "(ns1/transit, ns1/p1), their tokens carry it",
    )


def downgrade() -> None:
    bind = op.get_bind()
    if bind.execute(sa.text("SELECT count(*) FROM namespaces")).scalar():
        raise RuntimeError(
            "namespaces exist: delete them (sys/namespaces) before going back to a release without namespaces"
        )
    op.drop_table("namespaces")
