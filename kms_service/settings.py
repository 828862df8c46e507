"""One frozen object with everything a server needs to start; the CLI and the tests build it the same way."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from kms_service.config import ServiceConfig
from kms_service.seal import MasterKey
from kms_service.storage.engine import default_database_url

DEFAULT_CACHE_TTL = 5.0
DEFAULT_REAP_INTERVAL = 60.0
# How often keys are checked for auto-rotation (Vault checks at most once an hour).
DEFAULT_ROTATE_CHECK_INTERVAL = 3600.0
DEFAULT_MAX_BATCH_ITEMS = 10_000
# NIST SP 800-38D bounds random 96-bit nonces at 2^32 uses of a key: warn at 2^30, rotate well before 2^31.
DEFAULT_NONCE_WARNING_AT = 2**30
DEFAULT_NONCE_ROTATION_AT = 2**31 - 2**27


@dataclass(frozen=True)
class Settings:
    data_dir: Path = Path("data")
    # Default: SQLite at <data_dir>/kms.db.
    database_url: str | None = None
    # The services YAML to provision at start (None: serve what the database holds).
    service: ServiceConfig | None = None
    cache_ttl: float = DEFAULT_CACHE_TTL
    reap_interval: float = DEFAULT_REAP_INTERVAL
    rotate_check_interval: float = DEFAULT_ROTATE_CHECK_INTERVAL
    # The most items one batch_input may carry (each is parsed and answered in memory).
    max_batch_items: int = DEFAULT_MAX_BATCH_ITEMS
    # None: KMS_MASTER_KEY, else <data_dir>/master.key (created on first start).
    master_key: MasterKey | None = None
    # The nonce budget of 96-bit random-nonce keys, in encryptions of one version: warn, then rotate.
    nonce_warning_at: int = DEFAULT_NONCE_WARNING_AT
    nonce_rotation_at: int = DEFAULT_NONCE_ROTATION_AT
    # One log line per request (kms_service.access): request id, route, status, latency, token accessor.
    access_log: bool = False
    # A worker of `serve --workers N`: its parent has migrated and provisioned already, so the worker only
    # checks the schema is current and loads what is there (workers never race a migration or provisioning).
    prepared: bool = False

    @property
    def url(self) -> str:
        return self.database_url or default_database_url(self.data_dir)
