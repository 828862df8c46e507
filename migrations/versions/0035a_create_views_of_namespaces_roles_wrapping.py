"""Create the operators' views kms_namespaces, kms_token_roles and kms_wrapped_responses.

Revision ID: 0035a
Revises: 0035

What namespaces exist, which token roles each holds and which wrapped responses wait to be unwrapped, for
sqlite3 and psql as the other kms_* views answer (0028). Never a secret: no wrapping token's HMAC, no sealed
response; a role granted SELECT on the views alone reads these too.
"""

from alembic import op

revision = "0035a"
down_revision = "0035"
branch_labels = None
depends_on = None

VIEWS = ("kms_namespaces", "kms_token_roles", "kms_wrapped_responses")

STATEMENTS = (
    """
    CREATE VIEW kms_namespaces AS
    SELECT
        n.path AS path,
        n.public_id AS id,
        n.custom_metadata AS custom_metadata,
        n.created_at AS created_at,
        (SELECT COUNT(*) FROM tokens t WHERE t.namespace = n.path) AS token_count
    FROM namespaces n
    """,
    """
    CREATE VIEW kms_token_roles AS
    SELECT r.namespace AS namespace, r.name AS name, r.settings AS settings
    FROM token_roles r
    """,
    """
    CREATE VIEW kms_wrapped_responses AS
    SELECT
        w.accessor AS accessor,
        w.creation_path AS creation_path,
        w.created_at AS created_at,
        w.expires_at AS expires_at,
        w.ttl AS ttl,
        w.wrapped_accessor AS wrapped_accessor
    FROM wrapped_responses w
    """,
)


def upgrade() -> None:
    for statement in STATEMENTS:
        op.execute(statement)


def downgrade() -> None:
    for view in reversed(VIEWS):
        op.execute(f"DROP VIEW IF EXISTS {view}")
