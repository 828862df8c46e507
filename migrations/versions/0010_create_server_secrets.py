"""Create server_secrets: the server's own random secrets, sealed under the master key.

Revision ID: 0010
Revises: 0009

One change per revision, with a downgrade. Several nodes may run the previous release against the same
database while this one rolls out: keep every change compatible with the code before it.
The service fills it at its next start. For a database made before this revision it stores the keys the
previous release derived from the master key, so every existing token keeps working.
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "server_secrets",
        sa.Column("name", sa.String(length=64), nullable=False, comment="What the secret is for"),
        sa.Column(
            "sealed_value", sa.LargeBinary(), nullable=False, comment="Sealed under the master key, bound to name"
        ),
        sa.Column("master_key_id", sa.String(length=16), nullable=False, comment="Which master key sealed this row"),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_server_secrets")),
        comment="The server's own random secrets (token HMAC key, endpoint token key, cluster id), sealed under "
        "the master key, so a master-key rotation re-seals them and no token changes",
    )


def downgrade() -> None:
    op.drop_table("server_secrets")
