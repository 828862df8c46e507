"""Create mounts: transit engines by path, with the original ``transit/`` as mount 1.

Revision ID: 0020
Revises: 0019

One change per revision, with a downgrade. Several nodes may run the previous release against the same
database while this one rolls out: keep every change compatible with the code before it.
"""

import secrets
import uuid
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision = "0020"
down_revision = "0019"
branch_labels = None
depends_on = None


def upgrade() -> None:
    mounts = op.create_table(
        "mounts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column(
            "path",
            sa.String(length=300),
            nullable=False,
            comment="Where it is mounted, without slashes at the ends: transit, teams/eu",
        ),
        sa.Column("type", sa.String(length=32), nullable=False, comment="The engine: transit"),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("accessor", sa.String(length=32), nullable=False, comment="Vault's public mount handle"),
        sa.Column("uuid", sa.String(length=36), nullable=False),
        sa.Column("config", sa.Text(), nullable=False, comment="Tuned settings (JSON): lease TTLs"),
        sa.Column("options", sa.Text(), nullable=False, comment="Mount options as given (JSON)"),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_mounts")),
        sa.UniqueConstraint("accessor", name=op.f("uq_mounts_accessor")),
        sa.UniqueConstraint("path", name=op.f("uq_mounts_path")),
        sa.UniqueConstraint("uuid", name=op.f("uq_mounts_uuid")),
        comment="Transit engines by path (Vault's sys/mounts); each holds its own keys",
    )
    # Every key so far lives in transit/: it is mount 1, which the next revision's default points at.
    now = datetime.now(UTC)
    if op.get_bind().dialect.name == "sqlite":
        now = now.replace(tzinfo=None)
    op.bulk_insert(
        mounts,
        [
            {
                "id": 1,
                "path": "transit",
                "type": "transit",
                "description": "",
                "accessor": f"transit_{secrets.token_hex(4)}",
                "uuid": str(uuid.uuid4()),
                "config": "{}",
                "options": "{}",
                "created_at": now,
                "updated_at": now,
            }
        ],
    )
    if op.get_bind().dialect.name == "postgresql":
        op.execute("SELECT setval(pg_get_serial_sequence('mounts', 'id'), 1)")


def downgrade() -> None:
    op.drop_table("mounts")
