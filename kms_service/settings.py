"""One frozen object with everything a server needs to start; the CLI and the tests build it the same way.

Every option of ``kms-service serve`` is declared here, once: a ``Settings`` field made by ``setting(...)``
holds its flag, default and help, its type is the field's, and its environment variable is ``KMS_`` and the
flag's name (``--max-json-depth``: ``KMS_MAX_JSON_DEPTH``). ``SETTINGS`` lists them in the order ``serve
--help`` shows them; the CLI makes its options from them (``cli_common.setting_options``) and
docs/configuration.md's command reference is generated from those options (``make docs``).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from types import UnionType
from typing import TYPE_CHECKING, Any, Literal, get_args, get_type_hints

from kms_service.storage import DEFAULT_LOCK_TIMEOUT

if TYPE_CHECKING:  # the commands read this table at start-up: it imports no database, YAML or crypto library
    from kms_service.config import ServiceConfig
    from kms_service.seal import MasterKey

_DECLARATION = "setting"
PathKind = Literal["file", "dir", "any"]


@dataclass(frozen=True)
class Setting:
    """One option: ``flag`` (``--name``) of type ``kind`` (bool, int, float, str or Path), read also from
    ``envvar``. A bool is a flag (``negatable``: also ``--no-name``); a number may have bounds; a Path names
    a ``path_kind``; a ``duration`` is whole seconds, given as 30s, 1h, 8760h."""

    name: str  # the Settings field, and the command's parameter
    flag: str
    kind: type
    default: Any
    help: str
    required: bool = False
    minimum: float | None = None
    maximum: float | None = None
    negatable: bool = False
    path_kind: PathKind = "any"
    duration: bool = False

    @property
    def envvar(self) -> str:
        return "KMS_" + self.flag.removeprefix("--").upper().replace("-", "_")


def setting(flag: str, default: Any, help: str, **declared: Any) -> Any:
    """A ``Settings`` field that is also an option of ``serve`` (``Setting``'s other fields as keywords)."""
    return field(default=default, metadata={_DECLARATION: {"flag": flag, "help": help, **declared}})


@dataclass(frozen=True)
class Settings:
    # The options of serve, in the order its --help shows them.
    config_path: Path | None = setting(
        "--config",
        None,
        "The services YAML (the platform's .platform/services.yaml) to provision and serve.",
        required=True,
    )
    host: str = setting("--host", "127.0.0.1", "Address to listen on.")
    port: int = setting(
        "--port", 8200, "Port to listen on (0: a free one, shown in the banner).", minimum=0, maximum=65535
    )
    reap_interval: float = setting(
        "--reap-interval",
        60.0,
        "Seconds between sweeps that delete expired tokens and expired wrapped responses.",
        minimum=0.1,
    )
    # Vault checks for keys due for auto-rotation at most once an hour.
    rotate_check_interval: float = setting(
        "--rotate-check-interval",
        3600.0,
        "Seconds between checks for keys whose auto_rotate_period has passed.",
        minimum=0.1,
    )
    # Each item of a batch_input is parsed and answered in memory.
    max_batch_items: int = setting(
        "--max-batch-items",
        10_000,
        "The most items one batch_input may carry; more is a 400.",
        minimum=1,
        maximum=1_000_000,
    )
    cache_ttl: float = setting(
        "--cache-ttl",
        5.0,
        "Seconds a cached key or token is trusted before the database is asked again.",
        minimum=0,
    )
    # After the window, the node fails closed (503) until the database is back.
    stale_while_down: float = setting(
        "--stale-while-down",
        300.0,
        "Seconds a node keeps serving encrypt/decrypt/sign/verify/hmac from memory (keys and tokens it already "
        "holds) once the database is unreachable; then everything is a 503 until it is back. 0: at once.",
        minimum=0,
    )
    # The listener, after Vault's (http_read_header_timeout, http_read_timeout, http_idle_timeout).
    header_read_timeout: float = setting(
        "--header-read-timeout",
        10.0,
        "Seconds a request's headers may take to arrive (from its first byte); then the connection is closed.",
        minimum=0.1,
    )
    request_read_timeout: float = setting(
        "--request-read-timeout",
        30.0,
        "Seconds a whole request, body included, may take to arrive.",
        minimum=0.1,
    )
    idle_timeout: float = setting(
        "--idle-timeout", 300.0, "Seconds a kept-alive connection may sit idle between requests.", minimum=0.1
    )
    # Below the usual soft limit of 1024 open files, leaving room for the database and log files.
    max_connections: int = setting(
        "--max-connections",
        512,
        "Open connections at most (per worker). At the limit a new one takes the slot of a connection whose "
        "request headers are not all in, else of the one idle the longest; only when every one is busy with a "
        "request is it answered 503 and closed (0: no limit).",
        minimum=0,
        maximum=1_000_000,
    )
    # A quarter of the default --max-connections: one client address (one attacker, one leaky pool) cannot
    # take a worker's listener; behind a reverse proxy every client is the proxy's address (raise it, or 0).
    max_connections_per_address: int = setting(
        "--max-connections-per-address",
        128,
        "Open connections at most from one client address (per worker). Past it a new one takes the slot of "
        "one of that address's own, chosen as for --max-connections, or is answered 503 when all of them are "
        "busy (0: no limit; behind a reverse proxy, raise it or set 0).",
        minimum=0,
        maximum=1_000_000,
    )
    # Request bodies: single-item paths, and paths that take batch_input (or a backup) and may be larger.
    max_request_bytes: int = setting(
        "--max-request-size",
        2 * 1024 * 1024,
        "Bytes a request body may have on single-item paths; more is a 413.",
        minimum=1024,
        maximum=1 << 30,
    )
    max_batch_request_bytes: int = setting(
        "--max-batch-request-size",
        32 * 1024 * 1024,  # Vault's max_request_size
        "Bytes a request body may have on paths taking batch_input, and restore.",
        minimum=1024,
        maximum=1 << 30,
    )
    # JSON, after Vault's listener limits (max_json_depth, max_json_string_value_length,
    # max_json_object_entry_count / max_json_array_element_count, max_json_token); stricter where Vault's
    # defaults let one body occupy a core for a second.
    max_json_depth: int = setting(
        "--max-json-depth", 32, "Nesting depth of a JSON body at most.", minimum=2, maximum=500
    )
    max_json_string_length: int = setting(
        "--max-json-string-length",
        1024 * 1024,
        "Characters in one JSON string at most.",
        minimum=64,
        maximum=1 << 30,
    )
    max_json_entries: int = setting(
        "--max-json-entries",
        10_000,
        "Entries in one JSON object or array at most (batch_input: --max-batch-items).",
        minimum=1,
        maximum=10_000_000,
    )
    max_json_tokens: int = setting(
        "--max-json-tokens",
        200_000,
        "Values (and keys) in one JSON body at most.",
        minimum=100,
        maximum=100_000_000,
    )
    # Whether provisioning ``service`` may remove endpoints (and their tokens) the database holds and it
    # does not name; otherwise the start is refused.
    prune: bool = setting(
        "--prune",
        False,
        "Remove endpoints (and their tokens) the database holds and --config no longer names; "
        "without it, serve refuses to start when the file drops one.",
    )
    # master.key or the SQLite files readable by group or others: an error, not a warning.
    strict_permissions: bool = setting(
        "--strict-permissions",
        False,
        "Refuse to start when master.key or the SQLite files are readable by group or others (default: a warning).",
    )
    # The longest life a token may be given (CLI and auth/token/create), in seconds: one year, as the
    # endpoint tokens of the services YAML.
    max_token_ttl: int = setting(
        "--max-token-ttl",
        365 * 24 * 3600,
        "The longest life a token may get (token create --ttl; auth/token/create caps to it).",
        duration=True,
    )
    # The life of a token asked for without a TTL (CLI and auth/token/create), in seconds: Vault's 768h. The
    # services YAML's endpoint tokens keep their one year.
    default_token_ttl: int = setting(
        "--default-token-ttl",
        768 * 3600,
        "The life of a token created without a TTL (token create; auth/token/create), at most --max-token-ttl.",
        duration=True,
    )
    tls_cert: Path | None = setting(
        "--tls-cert",
        None,
        "PEM certificate (chain) to serve HTTPS with; needs --tls-key. TLS 1.2 or newer only.",
        path_kind="file",
    )
    tls_key: Path | None = setting("--tls-key", None, "Its PEM key.", path_kind="file")
    # One log line per request (kms_service.access): request id, route, status, latency, token accessor.
    access_log: bool = setting(
        "--access-log",
        False,
        "One log line per request: request id, method, route template, status, latency, token accessor "
        "(never a token, a body or a key name).",
        negatable=True,
    )
    # The operator's console: static files at /ui/ that call this API with the operator's token.
    console: bool = setting(
        "--console",
        True,
        "Serve the operator's console at /ui/ (static files; every view is limited by the policies of the "
        "token used to sign in, as any client is).",
        negatable=True,
    )
    # Processes serving the port (None: one per core).
    workers: int | None = setting(
        "--workers",
        None,
        "Processes serving the port (SO_REUSEPORT), one database and master key.  [default: one per core]",
        minimum=1,
    )
    # The audit log's sinks (none: no audit log): a JSON-lines file, and the database's audit_records table.
    audit_file: Path | None = setting(
        "--audit-file",
        None,
        "Audit log: one JSON line per request and response, secrets hashed (reopened on SIGHUP; the workers "
        "of --workers share it).",
        path_kind="file",
    )
    audit_db: bool = setting(
        "--audit-db",
        False,
        "Audit log in the database's audit_records table (written in batches).",
        negatable=True,
    )
    # How often the audit file is fsynced and the audit chains' heads anchored in the database.
    audit_flush_interval: float = setting(
        "--audit-flush-interval",
        1.0,
        "Seconds between fsyncs of the audit file, writes of the audit table and anchors of the chains.",
        minimum=0.05,
        maximum=60,
    )
    # Past it, the database sink refuses records.
    audit_db_queue: int = setting(
        "--audit-db-queue",
        20_000,
        "Audit records that may wait for the database (--audit-db); past it the table refuses them.",
        minimum=1,
        maximum=10_000_000,
    )
    # None: SQLite at <data_dir>/kms.db.
    database_url: str | None = setting(
        "--database-url", None, "sqlite:///path or postgresql://user@host/db (default: SQLite under --data-dir)."
    )
    data_dir: Path = setting("--data-dir", Path("data"), "Holds the SQLite database and master.key.", path_kind="dir")
    # Bounded waits: a write blocked by another transaction's lock, or by a pool with no free connection,
    # is answered 503 "database busy" instead of hanging; reads go on meanwhile.
    database_lock_timeout: float = setting(
        "--database-lock-timeout",
        DEFAULT_LOCK_TIMEOUT,
        "Seconds a request waits for a database lock another transaction holds (SQLite's write lock, a "
        'PostgreSQL row or table lock) or for a free pooled connection; then it gets a 503 "database busy".',
        minimum=0.1,
        maximum=600,
    )

    # Not options: what serve makes of them, and what its workers are told.
    # The services YAML (``config_path``) to provision at start (None: serve what the database holds).
    service: ServiceConfig | None = None
    # None: KMS_MASTER_KEY, else <data_dir>/master.key (created on first start).
    master_key: MasterKey | None = None
    # The nonce budget of 96-bit random-nonce keys, in encryptions of one version: warn, then rotate. NIST
    # SP 800-38D bounds random 96-bit nonces at 2^32 uses of a key: warn at 2^30, rotate well before 2^31.
    nonce_warning_at: int = 2**30
    nonce_rotation_at: int = 2**31 - 2**27
    # A worker of `serve --workers N`: its parent has migrated and provisioned already, so the worker only
    # checks the schema is current and loads what is there (workers never race a migration or provisioning).
    prepared: bool = False
    # Which worker of `serve --workers N` this process is (0 to N-1; None: a single process). Its metrics
    # then go to the files of prometheus-client's multiprocess mode, so any worker's scrape shows them all.
    worker: int | None = None

    @property
    def url(self) -> str:
        from kms_service.storage.database import default_database_url

        return self.database_url or default_database_url(self.data_dir)


def _kind(annotation: Any) -> type:
    """``int | None`` → int."""
    if isinstance(annotation, UnionType):
        (kind,) = (arg for arg in get_args(annotation) if arg is not type(None))
        return kind
    return annotation


def _declared() -> tuple[Setting, ...]:
    # The fields that are not options name types imported only for type checking: any placeholder will do.
    hints = get_type_hints(Settings, localns={"ServiceConfig": object, "MasterKey": object})
    return tuple(
        Setting(name=f.name, kind=_kind(hints[f.name]), default=f.default, **f.metadata[_DECLARATION])
        for f in fields(Settings)
        if _DECLARATION in f.metadata
    )


SETTINGS: tuple[Setting, ...] = _declared()
SETTING_BY_NAME = {s.name: s for s in SETTINGS}
# Every default in one object, for code that keeps its own copy of a limit (the listener's, a request's).
DEFAULTS = Settings()
