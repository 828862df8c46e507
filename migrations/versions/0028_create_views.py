"""Create the operators' views: kms_keys, kms_key_versions, kms_tokens, kms_endpoints.

Revision ID: 0028
Revises: 0027

Readable answers for sqlite3 and psql (README, "A readable database"): names, types, versions, creation and
last rotation, grants, token accessors and expiry. Never a secret: no sealed material, no token HMAC, no
server secret; a role granted SELECT on these views alone (PostgreSQL) reads nothing else.

Column names and meanings are the same on both databases, and so are the day counts (whole days, truncated
toward zero), so one query answers on either. Booleans are true/false on PostgreSQL and 1/0 on SQLite.

A later migration that changes a column these views read (or rebuilds one of their tables on SQLite) drops
the views first and creates them again after.
"""

# ruff: noqa: S608 (the statements are built from this file's constants only: no input reaches them)

from alembic import op

revision = "0028"
down_revision = "0027"
branch_labels = None
depends_on = None

VIEWS = ("kms_keys", "kms_key_versions", "kms_tokens", "kms_endpoints")


def _days_since(dialect: str, column: str) -> str:
    if dialect == "postgresql":
        return f"CAST(TRUNC(EXTRACT(EPOCH FROM (now() - {column})) / 86400) AS INTEGER)"
    return f"CAST(julianday('now') - julianday({column}) AS INTEGER)"


def _days_until(dialect: str, column: str) -> str:
    if dialect == "postgresql":
        return f"CAST(TRUNC(EXTRACT(EPOCH FROM ({column} - now())) / 86400) AS INTEGER)"
    return f"CAST(julianday({column}) - julianday('now') AS INTEGER)"


def _joined(dialect: str, column: str, from_where: str) -> str:
    """The values of ``column`` (``FROM ... WHERE ...``) sorted and joined with ', '; NULL when none."""
    if dialect == "postgresql":
        return f"(SELECT string_agg({column}, ', ' ORDER BY {column}) {from_where})"
    return f"(SELECT group_concat(value, ', ') FROM (SELECT {column} AS value {from_where} ORDER BY {column}))"


def _statements(dialect: str) -> list[str]:
    latest_created = "(SELECT v.created_at FROM key_versions v WHERE v.key_id = k.id AND v.version = k.latest_version)"
    endpoint_policies = _joined(
        dialect,
        "p.name",
        "FROM endpoint_policies ep JOIN policies p ON p.id = ep.policy_id WHERE ep.endpoint_id = t.endpoint_id",
    )
    token_policies = _joined(dialect, "tp.policy", "FROM token_policies tp WHERE tp.token_id = t.id")
    return [
        f"""
        CREATE VIEW kms_keys AS
        SELECT
            m.path AS mount,
            k.name AS name,
            k.type AS type,
            k.latest_version AS latest_version,
            (SELECT COUNT(*) FROM key_versions v WHERE v.key_id = k.id) AS version_count,
            k.min_decryption_version AS min_decryption_version,
            k.min_encryption_version AS min_encryption_version,
            k.min_available_version AS min_available_version,
            k.created_at AS created_at,
            (SELECT MAX(v.created_at) FROM key_versions v WHERE v.key_id = k.id AND v.version > 1) AS last_rotated_at,
            {_days_since(dialect, latest_created)} AS version_age_days,
            k.auto_rotate_period AS auto_rotate_period,
            k.exportable AS exportable,
            k.allow_plaintext_backup AS allow_plaintext_backup,
            k.deletion_allowed AS deletion_allowed,
            k.derived AS derived,
            k.convergent_encryption AS convergent_encryption,
            k.soft_deleted AS soft_deleted,
            k.source AS source,
            k.retain_versions AS retain_versions,
            k.custom_metadata AS custom_metadata,
            k.updated_at AS updated_at
        FROM keys k
        JOIN mounts m ON m.id = k.mount_id
        """,
        """
        CREATE VIEW kms_key_versions AS
        SELECT
            m.path AS mount,
            k.name AS key_name,
            k.type AS type,
            v.version AS version,
            v.created_at AS created_at,
            (v.version = k.latest_version) AS is_latest,
            (v.version >= k.min_decryption_version) AS decrypts,
            v.master_key_id AS master_key_id,
            v.public_key AS public_key,
            COALESCE(u.encryptions, 0) AS encryptions,
            COALESCE(u.signatures, 0) AS signatures,
            u.last_used_at AS last_used_at
        FROM key_versions v
        JOIN keys k ON k.id = v.key_id
        JOIN mounts m ON m.id = k.mount_id
        LEFT JOIN key_version_usage u ON u.key_id = v.key_id AND u.version = v.version
        """,
        f"""
        CREATE VIEW kms_tokens AS
        SELECT
            t.accessor AS accessor,
            t.display_name AS display_name,
            e.name AS endpoint,
            CASE WHEN t.endpoint_id IS NOT NULL THEN {endpoint_policies} ELSE {token_policies} END AS policies,
            t.created_at AS created_at,
            t.expires_at AS expires_at,
            {_days_until(dialect, "t.expires_at")} AS expires_in_days,
            t.parent_accessor AS parent_accessor,
            t.num_uses AS num_uses,
            t.renewable AS renewable,
            t.ttl AS ttl,
            t.explicit_max_ttl AS explicit_max_ttl
        FROM tokens t
        LEFT JOIN endpoints e ON e.id = t.endpoint_id
        """,
        f"""
        CREATE VIEW kms_endpoints AS
        SELECT
            e.name AS endpoint,
            p.template AS policy,
            k.name AS key_name,
            p.name AS policy_name,
            tok.accessor AS token_accessor,
            tok.expires_at AS token_expires_at,
            {_days_until(dialect, "tok.expires_at")} AS token_expires_in_days,
            (SELECT COUNT(*) FROM tokens t3 WHERE t3.endpoint_id = e.id) AS token_count,
            e.created_at AS created_at
        FROM endpoints e
        LEFT JOIN endpoint_policies ep ON ep.endpoint_id = e.id
        LEFT JOIN policies p ON p.id = ep.policy_id
        LEFT JOIN keys k ON k.id = p.key_id
        LEFT JOIN tokens tok ON tok.id = (
            SELECT t2.id FROM tokens t2 WHERE t2.endpoint_id = e.id ORDER BY t2.expires_at DESC, t2.id DESC LIMIT 1
        )
        """,
    ]


def upgrade() -> None:
    for statement in _statements(op.get_bind().dialect.name):
        op.execute(statement)


def downgrade() -> None:
    for view in reversed(VIEWS):
        op.execute(f"DROP VIEW IF EXISTS {view}")
