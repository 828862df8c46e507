"""Add keys.source: whether a key came from the services YAML or was made over HTTP.

Revision ID: 0015
Revises: 0014

One change per revision, with a downgrade. Several nodes may run the previous release against the same
database while this one rolls out: keep every change compatible with the code before it.
Every key made before this revision came from the services YAML.
"""

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "keys",
        sa.Column(
            "source",
            sa.String(length=16),
            nullable=False,
            server_default="services-yaml",
            comment="Where the key was made: services-yaml (provisioned) or api (transit/keys over HTTP)",
        ),
    )


def downgrade() -> None:
    # Plain DROP COLUMN (SQLite >= 3.35): rebuilding keys would cascade into key_versions.
    op.drop_column("keys", "source")
