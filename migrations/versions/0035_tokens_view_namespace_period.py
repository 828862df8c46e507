"""The kms_tokens view names each token's namespace and period.

Revision ID: 0035
Revises: 0034a

Tokens carry a namespace (0033a) and a period (0034) that the operators' view did not show: a token of
namespace ns1 read as a root-namespace one. The view is made again with both columns, after the others it
had; its downgrade makes 0028's view again.
"""

# ruff: noqa: S608 (the statements are built from this file's constants and 0028's only: no input reaches them)

import importlib.util
from pathlib import Path

from alembic import op

revision = "0035"
down_revision = "0034a"
branch_labels = None
depends_on = None


def _views_revision():
    """0028's module, whose statements made the views (its file name is no importable module name)."""
    spec = importlib.util.spec_from_file_location("views_0028", Path(__file__).with_name("0028_create_views.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _tokens_view(dialect: str) -> str:
    """0028's kms_tokens statement."""
    return next(s for s in _views_revision()._statements(dialect) if "CREATE VIEW kms_tokens" in s)


def upgrade() -> None:
    dialect = op.get_bind().dialect.name
    before = _tokens_view(dialect)
    last_column = "t.explicit_max_ttl AS explicit_max_ttl"
    assert last_column in before
    statement = before.replace(
        last_column, f"{last_column},\n            t.namespace AS namespace,\n            t.period AS period"
    )
    op.execute("DROP VIEW IF EXISTS kms_tokens")
    op.execute(statement)


def downgrade() -> None:
    op.execute("DROP VIEW IF EXISTS kms_tokens")
    op.execute(_tokens_view(op.get_bind().dialect.name))
