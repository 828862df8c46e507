"""Key seal_check by master_key_id: one row per accepted master key, for a master-key rollover.

Revision ID: 0011
Revises: 0010

One change per revision, with a downgrade. Several nodes may run the previous release against the same
database while this one rolls out: keep every change compatible with the code before it.
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

COMMENT = (
    "A known value sealed under each accepted master key (several during a master-key rollover): a master key "
    "with no row here is refused at start"
)


def upgrade() -> None:
    with op.batch_alter_table("seal_check", recreate="always") as batch:
        batch.drop_constraint(op.f("ck_seal_check_single_row"), type_="check")
        batch.drop_constraint(op.f("pk_seal_check"), type_="primary")
        batch.drop_column("id")
        batch.create_primary_key(op.f("pk_seal_check"), ["master_key_id"])
    _comment(COMMENT)


def downgrade() -> None:
    bind = op.get_bind()
    if bind.execute(sa.text("SELECT count(*) FROM seal_check")).scalar() > 1:
        raise RuntimeError("seal_check holds several master keys (a rollover is under way); finish it first")
    with op.batch_alter_table("seal_check", recreate="always") as batch:
        batch.drop_constraint(op.f("pk_seal_check"), type_="primary")
        batch.add_column(sa.Column("id", sa.Integer(), autoincrement=False, nullable=False, server_default="1"))
    with op.batch_alter_table("seal_check", recreate="always") as batch:
        batch.alter_column("id", existing_type=sa.Integer(), server_default=None)
        batch.create_primary_key(op.f("pk_seal_check"), ["id"])
        batch.create_check_constraint(op.f("ck_seal_check_single_row"), "id = 1")
    _comment("A known value sealed under the master key: a wrong master key is refused at start")


def _comment(text: str) -> None:
    if op.get_bind().dialect.name != "sqlite":  # SQLite has no table comments
        op.create_table_comment("seal_check", text)
