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
    # One log line per request (kms_service.access): request id, route, status, latency, token accessor.
    access_log: bool = False

    @property
    def url(self) -> str:
        return self.database_url or default_database_url(self.data_dir)
