"""One frozen object with everything a server needs to start; the CLI and the tests build it the same way."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from kms_service.config import ServiceConfig
from kms_service.seal import MasterKey
from kms_service.storage.database import default_database_url

DEFAULT_CACHE_TTL = 5.0
DEFAULT_REAP_INTERVAL = 60.0
# How long a node serves from memory (keys and tokens it holds) once its database is unreachable.
DEFAULT_STALE_WHILE_DOWN = 300.0
# How often keys are checked for auto-rotation (Vault checks at most once an hour).
DEFAULT_ROTATE_CHECK_INTERVAL = 3600.0
DEFAULT_MAX_BATCH_ITEMS = 10_000
# NIST SP 800-38D bounds random 96-bit nonces at 2^32 uses of a key: warn at 2^30, rotate well before 2^31.
DEFAULT_NONCE_WARNING_AT = 2**30
DEFAULT_NONCE_ROTATION_AT = 2**31 - 2**27
# One year, as the endpoint tokens of the services YAML.
DEFAULT_MAX_TOKEN_TTL = 365 * 24 * 3600

# The listener, after Vault's (http_read_header_timeout, http_read_timeout, http_idle_timeout).
DEFAULT_HEADER_READ_TIMEOUT = 10.0
DEFAULT_REQUEST_READ_TIMEOUT = 30.0
DEFAULT_IDLE_TIMEOUT = 300.0
# Below the usual soft limit of 1024 open files, leaving room for the database and log files.
DEFAULT_MAX_CONNECTIONS = 512
# Request bodies: single-item paths, and paths that take batch_input (or a backup) and may be larger.
DEFAULT_MAX_REQUEST_BYTES = 2 * 1024 * 1024
DEFAULT_MAX_BATCH_REQUEST_BYTES = 32 * 1024 * 1024  # Vault's max_request_size
# JSON, after Vault's listener limits (max_json_depth, max_json_string_value_length,
# max_json_object_entry_count / max_json_array_element_count, max_json_token); stricter where Vault's
# defaults let one body occupy a core for a second.
DEFAULT_MAX_JSON_DEPTH = 32
DEFAULT_MAX_JSON_STRING_LENGTH = 1024 * 1024
DEFAULT_MAX_JSON_ENTRIES = 10_000
DEFAULT_MAX_JSON_TOKENS = 200_000
# How often the audit file is fsynced and the audit chains' heads anchored in the database.
DEFAULT_AUDIT_FLUSH_INTERVAL = 1.0
DEFAULT_AUDIT_DB_QUEUE = 20_000


@dataclass(frozen=True)
class Settings:
    data_dir: Path = Path("data")
    # Default: SQLite at <data_dir>/kms.db.
    database_url: str | None = None
    # The services YAML to provision at start (None: serve what the database holds).
    service: ServiceConfig | None = None
    # Whether provisioning ``service`` may remove endpoints (and their tokens) the database holds and it
    # does not name (serve --prune); otherwise the start is refused.
    prune: bool = False
    cache_ttl: float = DEFAULT_CACHE_TTL
    # Seconds a serving node answers crypto requests from its caches after its database became unreachable;
    # then it fails closed (503) until the database is back.
    stale_while_down: float = DEFAULT_STALE_WHILE_DOWN
    reap_interval: float = DEFAULT_REAP_INTERVAL
    rotate_check_interval: float = DEFAULT_ROTATE_CHECK_INTERVAL
    # The most items one batch_input may carry (each is parsed and answered in memory).
    max_batch_items: int = DEFAULT_MAX_BATCH_ITEMS
    header_read_timeout: float = DEFAULT_HEADER_READ_TIMEOUT
    request_read_timeout: float = DEFAULT_REQUEST_READ_TIMEOUT
    idle_timeout: float = DEFAULT_IDLE_TIMEOUT
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES
    max_batch_request_bytes: int = DEFAULT_MAX_BATCH_REQUEST_BYTES
    max_json_depth: int = DEFAULT_MAX_JSON_DEPTH
    max_json_string_length: int = DEFAULT_MAX_JSON_STRING_LENGTH
    max_json_entries: int = DEFAULT_MAX_JSON_ENTRIES
    max_json_tokens: int = DEFAULT_MAX_JSON_TOKENS
    # master.key or the SQLite files readable by group or others: an error, not a warning.
    strict_permissions: bool = False
    # The longest life a token may be given (CLI and auth/token/create); seconds.
    max_token_ttl: int = DEFAULT_MAX_TOKEN_TTL
    # None: KMS_MASTER_KEY, else <data_dir>/master.key (created on first start).
    master_key: MasterKey | None = None
    # The nonce budget of 96-bit random-nonce keys, in encryptions of one version: warn, then rotate.
    nonce_warning_at: int = DEFAULT_NONCE_WARNING_AT
    nonce_rotation_at: int = DEFAULT_NONCE_ROTATION_AT
    # One log line per request (kms_service.access): request id, route, status, latency, token accessor.
    access_log: bool = False
    # The audit log's sinks (none: no audit log): a JSON-lines file, and the database's audit_records table.
    audit_file: Path | None = None
    audit_db: bool = False
    audit_flush_interval: float = DEFAULT_AUDIT_FLUSH_INTERVAL
    # Records the database sink may hold waiting for the database; past it, it refuses them.
    audit_db_queue: int = DEFAULT_AUDIT_DB_QUEUE
    # A worker of `serve --workers N`: its parent has migrated and provisioned already, so the worker only
    # checks the schema is current and loads what is there (workers never race a migration or provisioning).
    prepared: bool = False
    # Which worker of `serve --workers N` this process is (0 to N-1; None: a single process). Its metrics
    # then go to the files of prometheus-client's multiprocess mode, so any worker's scrape shows them all.
    worker: int | None = None

    @property
    def url(self) -> str:
        return self.database_url or default_database_url(self.data_dir)
