"""Create engine_settings: the transit engine's own settings (config/keys, cache-config).

Revision ID: 0016
Revises: 0015

One change per revision, with a downgrade. Several nodes may run the previous release against the same
database while this one rolls out: keep every change compatible with the code before it.
"""

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "engine_settings",
        sa.Column("name", sa.String(length=64), nullable=False, comment="e.g. disable_upsert, cache_size"),
        sa.Column("value", sa.Text(), nullable=False, comment="JSON value"),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_engine_settings")),
        comment="The transit engine's own settings (config/keys, cache-config), one row each",
    )


def downgrade() -> None:
    op.drop_table("engine_settings")
