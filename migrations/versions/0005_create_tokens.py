"""Create tokens: API tokens (HMAC only).

Revision ID: 0005
Revises: 0004

One change per revision, with a downgrade. Several nodes may run the previous release against the same
database while this one rolls out: keep every change compatible with the code before it.
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "tokens",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column(
            "accessor",
            sa.String(length=24),
            nullable=False,
            comment="Public handle to list/revoke a token without knowing it",
        ),
        sa.Column(
            "token_hmac",
            sa.LargeBinary(length=32),
            nullable=False,
            comment="HMAC-SHA256 of the token under a master-key subkey",
        ),
        sa.Column(
            "endpoint_id",
            sa.Integer(),
            nullable=True,
            comment="Set for endpoint tokens: policies come from endpoint_grants",
        ),
        sa.Column("display_name", sa.String(length=128), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column(
            "expires_at",
            sa.DateTime(timezone=True),
            nullable=True,
            comment="The reaper deletes rows past this time; NULL never expires",
        ),
        sa.ForeignKeyConstraint(
            ["endpoint_id"],
            ["endpoints.id"],
            name=op.f("fk_tokens_endpoint_id_endpoints"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tokens")),
        sa.UniqueConstraint("accessor", name=op.f("uq_tokens_accessor")),
        sa.UniqueConstraint("token_hmac", name=op.f("uq_tokens_token_hmac")),
        comment="API tokens; only an HMAC of each token is stored, never the token",
    )
    op.create_index(op.f("ix_tokens_endpoint_id"), "tokens", ["endpoint_id"], unique=False)
    op.create_index(op.f("ix_tokens_expires_at"), "tokens", ["expires_at"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_tokens_endpoint_id"), table_name="tokens")
    op.drop_index(op.f("ix_tokens_expires_at"), table_name="tokens")
    op.drop_table("tokens")
