"""The schema. Operators read it with sqlite3 or psql, so every table and column says what it is.

No column holds a secret in the clear: key material is sealed under the master key, tokens are HMACs.
Alembic owns the schema (``migrations/`` at the top of the tree); a test runs ``alembic check`` against these
models.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    ForeignKey,
    ForeignKeyConstraint,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    false,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from kms_service.storage.column_types import UTCDateTime

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class JSONText(TypeDecorator):
    """A JSON object kept as text (readable in sqlite3 and psql alike), given and read as a dict."""

    impl = Text
    cache_ok = True

    def process_bind_param(self, value, dialect):
        return None if value is None else json.dumps(dict(value), sort_keys=True, separators=(",", ":"))

    def process_result_value(self, value, dialect):
        return {} if value is None else json.loads(value)


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Mount(Base):
    __tablename__ = "mounts"
    __table_args__ = ({"comment": "Transit engines by path (Vault's sys/mounts); each holds its own keys"},)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    path: Mapped[str] = mapped_column(
        String(300), unique=True, comment="Where it is mounted, without slashes at the ends: transit, teams/eu"
    )
    type: Mapped[str] = mapped_column(String(32), comment="The engine: transit")
    description: Mapped[str] = mapped_column(Text, default="")
    accessor: Mapped[str] = mapped_column(String(32), unique=True, comment="Vault's public mount handle")
    uuid: Mapped[str] = mapped_column(String(36), unique=True)
    config: Mapped[str] = mapped_column(Text, default="{}", comment="Tuned settings (JSON): lease TTLs")
    options: Mapped[str] = mapped_column(Text, default="{}", comment="Mount options as given (JSON)")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Namespace(Base):
    __tablename__ = "namespaces"
    __table_args__ = (
        {
            "comment": "Tenants (OpenBao's sys/namespaces); their mounts and policies are stored under their path "
            "(ns1/transit, ns1/p1), their tokens carry it"
        },
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    path: Mapped[str] = mapped_column(
        String(300), unique=True, comment="The namespace's full path with a trailing slash: ns1/, ns1/child/"
    )
    public_id: Mapped[str] = mapped_column(String(16), unique=True, comment="Vault's short namespace id")
    uuid: Mapped[str] = mapped_column(String(36), unique=True)
    custom_metadata: Mapped[str] = mapped_column(Text, default="{}", comment="Vault's custom_metadata (JSON)")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Key(Base):
    __tablename__ = "keys"
    __table_args__ = (
        UniqueConstraint("mount_id", "name", name="uq_keys_mount_id_name"),
        CheckConstraint("latest_version >= 1", name="latest_version_positive"),
        CheckConstraint(
            "min_decryption_version >= 1 AND min_decryption_version <= latest_version",
            name="min_decryption_version_in_range",
        ),
        CheckConstraint(
            "min_encryption_version = 0 OR (min_encryption_version >= min_decryption_version "
            "AND min_encryption_version <= latest_version)",
            name="min_encryption_version_in_range",
        ),
        {
            "comment": "Named transit keys; one row per key. Key material lives in key_versions, sealed.",
            # Ids are never reused (caches and usage counters hold keys by id); PostgreSQL's sequence never does.
            "sqlite_autoincrement": True,
        },
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    # The default is transit/ (mount 1) for the inserts of the release before mounts, during a rollout.
    mount_id: Mapped[int] = mapped_column(
        ForeignKey("mounts.id", ondelete="RESTRICT"), server_default="1", comment="The transit mount holding the key"
    )
    name: Mapped[str] = mapped_column(String(128), comment="Key name as used in API paths, unique in its mount")
    type: Mapped[str] = mapped_column(String(32), comment="Vault key type, e.g. ecdsa-p256; never changes")
    latest_version: Mapped[int] = mapped_column(Integer, comment="Newest version; rotation adds one")
    min_decryption_version: Mapped[int] = mapped_column(
        Integer, default=1, comment="Ciphertexts/signatures of older versions are refused"
    )
    min_encryption_version: Mapped[int] = mapped_column(
        Integer, default=0, comment="Oldest version usable to encrypt/sign; 0 means latest only by default"
    )
    deletion_allowed: Mapped[bool] = mapped_column(Boolean, default=False)
    exportable: Mapped[bool] = mapped_column(Boolean, default=False, comment="One-way: once true, stays true")
    allow_plaintext_backup: Mapped[bool] = mapped_column(Boolean, default=False, comment="One-way")
    # Columns added after the first release carry a server default: existing rows took Vault's default.
    min_available_version: Mapped[int] = mapped_column(
        Integer,
        server_default="0",
        comment="Versions below this were trimmed (deleted for good); 0 = none trimmed",
    )
    auto_rotate_period: Mapped[int] = mapped_column(
        Integer, server_default="0", comment="Seconds between automatic rotations; 0 = never"
    )
    derived: Mapped[bool] = mapped_column(Boolean, server_default=false(), comment="Per-context keys (Vault's HKDF)")
    convergent_encryption: Mapped[bool] = mapped_column(
        Boolean,
        server_default=false(),
        comment="Same plaintext and context give the same ciphertext (needs derived)",
    )
    generation: Mapped[int] = mapped_column(
        Integer, default=1, comment="Bumped by every change; caches on every node compare it"
    )
    soft_deleted: Mapped[bool] = mapped_column(
        Boolean, server_default=false(), comment="OpenBao's soft delete: kept, refused for every use until restored"
    )
    allow_imported_key_rotation: Mapped[bool] = mapped_column(
        Boolean, server_default=false(), comment="An imported key may be rotated here (Vault's allow_rotation)"
    )
    retain_versions: Mapped[int] = mapped_column(
        Integer, server_default="0", comment="Keep the newest N versions decryptable; each rotation retires older"
    )
    custom_metadata: Mapped[dict] = mapped_column(
        JSONText, server_default="{}", comment="The operator's labels, a JSON object of strings"
    )
    source: Mapped[str] = mapped_column(
        String(16),
        server_default="services-yaml",
        comment="Where the key was made: services-yaml (provisioned) or api (transit/keys over HTTP)",
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class KeyVersion(Base):
    __tablename__ = "key_versions"
    __table_args__ = (
        CheckConstraint("version >= 1", name="version_positive"),
        {"comment": "One row per key version (rotation inserts one); material sealed under the master key"},
    )

    key_id: Mapped[int] = mapped_column(ForeignKey("keys.id", ondelete="CASCADE"), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    sealed_material: Mapped[bytes] = mapped_column(
        LargeBinary,
        comment="XChaCha20-Poly1305(master key, nonce ‖ ciphertext), bound to key name and version",
    )
    material_format: Mapped[int] = mapped_column(
        Integer,
        comment="1: sealed envelope (key, HMAC key, public key, origin); 0: a pre-envelope raw key, "
        "upgraded at the next start",
    )
    master_key_id: Mapped[str] = mapped_column(String(16), comment="Which master key sealed this row")
    public_key: Mapped[str | None] = mapped_column(Text, comment="PEM public key (asymmetric types only)")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class KeyVersionUsage(Base):
    __tablename__ = "key_version_usage"
    __table_args__ = (
        ForeignKeyConstraint(
            ["key_id", "version"],
            ["key_versions.key_id", "key_versions.version"],
            ondelete="CASCADE",
            name="fk_key_version_usage_key_versions",
        ),
        {
            "comment": "How much each key version was used. Nodes reserve counts in blocks before using them and "
            "give back what they did not use, so a crash can only overcount"
        },
    )

    key_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    encryptions: Mapped[int] = mapped_column(BigInteger, server_default="0", comment="Encryptions (and rewraps)")
    signatures: Mapped[int] = mapped_column(BigInteger, server_default="0")
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime, comment="Within the flush interval")


class Endpoint(Base):
    __tablename__ = "endpoints"
    __table_args__ = ({"comment": "Endpoints of the services YAML; apps connect to one by relationship"},)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True, comment="Endpoint id from the services YAML")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Policy(Base):
    __tablename__ = "policies"
    __table_args__ = (
        CheckConstraint(
            "(template IS NOT NULL AND key_id IS NOT NULL AND document IS NULL) OR "
            "(template IS NULL AND key_id IS NULL AND document IS NOT NULL)",
            name="template_or_document",
        ),
        {"comment": "ACL policies by name: a built-in template bound to one key, or a policy document"},
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(160), unique=True, comment="e.g. encrypt:payments; tokens name it")
    template: Mapped[str | None] = mapped_column(String(16), comment="Built-in: admin, sign, verify, encrypt, ...")
    key_id: Mapped[int | None] = mapped_column(
        ForeignKey("keys.id", ondelete="CASCADE"), index=True, comment="The key a built-in template is bound to"
    )
    document: Mapped[str | None] = mapped_column(Text, comment="A policy document (HCL or JSON), when not built-in")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class EndpointPolicy(Base):
    __tablename__ = "endpoint_policies"
    __table_args__ = ({"comment": "Which policies each endpoint's tokens carry (from the services YAML)"},)

    endpoint_id: Mapped[int] = mapped_column(ForeignKey("endpoints.id", ondelete="CASCADE"), primary_key=True)
    policy_id: Mapped[int] = mapped_column(ForeignKey("policies.id", ondelete="CASCADE"), primary_key=True, index=True)


class Token(Base):
    __tablename__ = "tokens"
    __table_args__ = ({"comment": "API tokens; only an HMAC of each token is stored, never the token"},)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    accessor: Mapped[str] = mapped_column(
        String(24), unique=True, comment="Public handle to list/revoke a token without knowing it"
    )
    token_hmac: Mapped[bytes] = mapped_column(
        LargeBinary(32), unique=True, comment="HMAC-SHA256 of the token under a master-key subkey"
    )
    endpoint_id: Mapped[int | None] = mapped_column(
        ForeignKey("endpoints.id", ondelete="CASCADE"),
        index=True,
        comment="Set for endpoint tokens: policies come from endpoint_grants",
    )
    display_name: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(
        UTCDateTime, index=True, comment="The reaper deletes rows past this time; NULL never expires"
    )
    parent_accessor: Mapped[str | None] = mapped_column(
        String(24), index=True, comment="Accessor of the token that created this one; NULL for orphans"
    )
    num_uses: Mapped[int] = mapped_column(Integer, server_default="0", comment="Uses left; 0 means unlimited")
    renewable: Mapped[bool] = mapped_column(
        Boolean, server_default=false(), comment="Whether auth/token/renew may extend it"
    )
    ttl: Mapped[int] = mapped_column(
        Integer, server_default="0", comment="The creation TTL in seconds (what a renew extends by); 0: none"
    )
    explicit_max_ttl: Mapped[int] = mapped_column(
        Integer, server_default="0", comment="Hard limit on its life in seconds from creation; 0: none"
    )
    meta: Mapped[str] = mapped_column(
        Text, server_default="{}", comment="Vault's token metadata, a JSON object of strings"
    )
    namespace: Mapped[str] = mapped_column(
        String(300),
        server_default=text("''"),
        index=True,
        comment="The namespace it was made in (ns1/; '' the root): its policies are that namespace's",
    )
    period: Mapped[int] = mapped_column(
        Integer,
        server_default="0",
        comment="Vault's period in seconds: each renewal sets the TTL to it; 0: not periodic",
    )


class TokenRole(Base):
    __tablename__ = "token_roles"
    __table_args__ = (
        UniqueConstraint("namespace", "name", name="uq_token_roles_namespace"),
        {"comment": "Vault's token roles: what auth/token/create/<role> may grant, per namespace"},
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    namespace: Mapped[str] = mapped_column(String(300), server_default=text("''"))
    name: Mapped[str] = mapped_column(String(128))
    settings: Mapped[str] = mapped_column(
        Text,
        comment="The role's fields as Vault names them, a JSON object (policies, period, token_type, ...)",
    )


class TokenPolicy(Base):
    __tablename__ = "token_policies"
    __table_args__ = ({"comment": "Policies of operator tokens: 'root' or '<policy>:<key>'"},)

    token_id: Mapped[int] = mapped_column(ForeignKey("tokens.id", ondelete="CASCADE"), primary_key=True)
    policy: Mapped[str] = mapped_column(String(160), primary_key=True)


class SealCheck(Base):
    __tablename__ = "seal_check"
    __table_args__ = (
        {
            "comment": "A known value sealed under each accepted master key (several during a master-key "
            "rollover): a master key with no row here is refused at start"
        },
    )

    master_key_id: Mapped[str] = mapped_column(String(16), primary_key=True)
    sealed_value: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ServerSecret(Base):
    __tablename__ = "server_secrets"
    __table_args__ = (
        {
            "comment": "The server's own random secrets (token HMAC key, endpoint token key, cluster id), "
            "sealed under the master key, so a master-key rotation re-seals them and no token changes"
        },
    )

    name: Mapped[str] = mapped_column(String(64), primary_key=True, comment="What the secret is for")
    sealed_value: Mapped[bytes] = mapped_column(LargeBinary, comment="Sealed under the master key, bound to name")
    master_key_id: Mapped[str] = mapped_column(String(16), comment="Which master key sealed this row")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class MasterKeyRollover(Base):
    __tablename__ = "master_key_rollover"
    __table_args__ = (
        {
            "comment": "A master-key rotation in progress (at most one row): the new key sealed under the old "
            "and the old under the new, so a node holding either key opens every row until the re-seal ends"
        },
    )

    new_key_id: Mapped[str] = mapped_column(String(16), primary_key=True, comment="The key that seals from now on")
    old_key_id: Mapped[str] = mapped_column(String(16), comment="The key being retired")
    new_key_sealed: Mapped[bytes] = mapped_column(LargeBinary, comment="The new master key sealed under the old")
    old_key_sealed: Mapped[bytes] = mapped_column(LargeBinary, comment="The old master key sealed under the new")
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class WrappedResponse(Base):
    __tablename__ = "wrapped_responses"
    __table_args__ = (
        {
            "comment": "Vault's response wrapping: a response kept for the holder of a single-use wrapping token; "
            "the row is deleted when it is unwrapped or rewrapped, and by the reaper once expired"
        },
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    accessor: Mapped[str] = mapped_column(
        String(24), unique=True, comment="The wrapping token's public handle (wrap_info.accessor)"
    )
    token_hmac: Mapped[bytes] = mapped_column(
        LargeBinary(32), unique=True, comment="HMAC-SHA256 of the wrapping token, as tokens.token_hmac; never the token"
    )
    creation_path: Mapped[str] = mapped_column(Text, comment="The request path whose response this is")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, comment="When the response was wrapped")
    expires_at: Mapped[datetime] = mapped_column(
        UTCDateTime, index=True, comment="After this the token unwraps nothing; the reaper deletes the row"
    )
    ttl: Mapped[int] = mapped_column(Integer, comment="The wrap TTL in seconds (a rewrap gives the new token the same)")
    wrapped_accessor: Mapped[str | None] = mapped_column(
        String(24), comment="The accessor of the token a wrapped auth/token/create made; NULL for other responses"
    )
    sealed_response: Mapped[bytes] = mapped_column(
        LargeBinary, comment="The response (Vault's JSON envelope) sealed under the master key, bound to accessor"
    )
    master_key_id: Mapped[str] = mapped_column(String(16), comment="Which master key sealed this row")


class MountSetting(Base):
    # The table keeps the name revision 0016 gave it (renaming it would be a schema change for no reader).
    __tablename__ = "engine_settings"
    __table_args__ = ({"comment": "The transit engine's own settings (config/keys, cache-config), one row each"},)

    mount_id: Mapped[int] = mapped_column(
        ForeignKey("mounts.id", ondelete="CASCADE"),
        primary_key=True,
        server_default="1",
        comment="Whose setting: a mount",
    )
    name: Mapped[str] = mapped_column(String(64), primary_key=True, comment="e.g. disable_upsert, cache_size")
    value: Mapped[str] = mapped_column(Text, comment="JSON value")
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ChangeLog(Base):
    __tablename__ = "change_log"
    __table_args__ = (
        {
            "comment": "SQLite only: recent committed changes, read by the other processes on the same file to "
            "drop their cache entries (PostgreSQL uses LISTEN/NOTIFY instead)",
            "sqlite_autoincrement": True,
        },
    )

    # AUTOINCREMENT: ids are never reused, so committed ids are contiguous (writers take turns) and a reader
    # that finds a gap knows it missed pruned rows.
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    payload: Mapped[str] = mapped_column(Text, comment="JSON: the writing process's node id and its changes")


class AuditAnchor(Base):
    __tablename__ = "audit_anchors"
    __table_args__ = (
        {
            "comment": "The head of each audit chain (one writer process, one sink), recorded periodically: "
            "'kms-service audit verify' shows records cut off before it"
        },
    )

    chain_id: Mapped[str] = mapped_column(String(64), primary_key=True, comment="The chain's id (in its records)")
    sink: Mapped[str] = mapped_column(String(16), comment="file or db")
    seq: Mapped[int] = mapped_column(BigInteger, comment="The last record written and flushed")
    hash: Mapped[str] = mapped_column(String(64), comment="That record's hash (HMAC-SHA256, hex)")
    closed: Mapped[bool] = mapped_column(Boolean, default=False, comment="The writer ended the chain cleanly")
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class AuditRecord(Base):
    __tablename__ = "audit_records"
    __table_args__ = (
        UniqueConstraint("chain_id", "seq"),
        {
            "comment": "The database audit sink (serve --audit-db): one JSON line per record, secrets hashed",
            "sqlite_autoincrement": True,
        },
    )

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    chain_id: Mapped[str] = mapped_column(String(64), comment="The writer's chain")
    seq: Mapped[int] = mapped_column(BigInteger, comment="Its place in the chain, from 1")
    line: Mapped[str] = mapped_column(Text, comment="The record as the file sink writes it (JSON)")
