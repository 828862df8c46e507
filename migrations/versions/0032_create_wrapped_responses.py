"""Create wrapped_responses: responses kept under single-use wrapping tokens (Vault's response wrapping).

Revision ID: 0032
Revises: 0031

One change per revision, with a downgrade. Several nodes may run the previous release against the same
database while this one rolls out: the previous release never reads nor writes this table (it answers
X-Vault-Wrap-TTL requests unwrapped, as before).
"""

import sqlalchemy as sa
from alembic import op

revision = "0032"
down_revision = "0031"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "wrapped_responses",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column(
            "accessor",
            sa.String(length=24),
            nullable=False,
            comment="The wrapping token's public handle (wrap_info.accessor)",
        ),
        sa.Column(
            "token_hmac",
            sa.LargeBinary(length=32),
            nullable=False,
            comment="HMAC-SHA256 of the wrapping token, as tokens.token_hmac; never the token",
        ),
        sa.Column("creation_path", sa.Text(), nullable=False, comment="The request path whose response this is"),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, comment="When the response was wrapped"),
        sa.Column(
            "expires_at",
            sa.DateTime(timezone=True),
            nullable=False,
            comment="After this the token unwraps nothing; the reaper deletes the row",
        ),
        sa.Column(
            "ttl",
            sa.Integer(),
            nullable=False,
            comment="The wrap TTL in seconds (a rewrap gives the new token the same)",
        ),
        sa.Column(
            "wrapped_accessor",
            sa.String(length=24),
            nullable=True,
            comment="The accessor of the token a wrapped auth/token/create made; NULL for other responses",
        ),
        sa.Column(
            "sealed_response",
            sa.LargeBinary(),
            nullable=False,
            comment="The response (Vault's JSON envelope) sealed under the master key, bound to accessor",
        ),
        sa.Column("master_key_id", sa.String(length=16), nullable=False, comment="Which master key sealed this row"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_wrapped_responses")),
        sa.UniqueConstraint("accessor", name=op.f("uq_wrapped_responses_accessor")),
        sa.UniqueConstraint("token_hmac", name=op.f("uq_wrapped_responses_token_hmac")),
        comment="Vault's response wrapping: a response kept for the holder of a single-use wrapping token; the row "
        "is deleted when it is unwrapped or rewrapped, and by the reaper once expired",
    )
    op.create_index(op.f("ix_wrapped_responses_expires_at"), "wrapped_responses", ["expires_at"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_wrapped_responses_expires_at"), table_name="wrapped_responses")
    op.drop_table("wrapped_responses")
