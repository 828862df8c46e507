"""Moving keys between a running Vault or OpenBao and this service (``kms-service migrate-from`` /
``migrate-to``).

The other server is spoken to over its HTTP API with a plain aiohttp client (``VaultClient``); keys are
written here through ``KeyService.restore``: one transaction per key, every version number, HMAC key, min
version and setting kept, so a ``vault:v<N>:`` ciphertext, signature or HMAC made there works here.

Routes in (per key, first that the key allows):

* ``backup/:name`` when the key is exportable and allows plaintext backup: every version that was not
  trimmed, also those below ``min_decryption_version``;
* ``export/encryption-key|signing-key`` and ``export/hmac-key`` when it is exportable: the live versions
  (Vault's export refuses versions below ``min_decryption_version``; the report names any left behind);
* nothing else: Vault's and OpenBao's ``byok-export`` refuse a key that is not exportable as well ("key is
  not exportable"), and carries no HMAC key, so a non-exportable key is reported, never half-moved.

Before taking a backup (which writes ``backup_info`` into the source key), the live versions are read with
``export`` and compared with what is here: a key already moved and unchanged is skipped without touching
the source again. A key here that differs from the source in a version both hold is never overwritten.

Out: ``restore`` with a backup in the destination's format when the key here allows plaintext backup
(version numbers kept), else ``keys/:name/import`` + ``import_version`` wrapped for the destination's
``wrapping_key`` (Vault numbers imported versions from 1, and makes new HMAC keys: the report says so).

Nothing here logs or prints key material or tokens.
"""

from kms_service.service.migration.client import MigrationError, VaultClient
from kms_service.service.migration.inbound import migrate_from, services_yaml
from kms_service.service.migration.outbound import migrate_to
from kms_service.service.migration.reports import (
    CONFLICT,
    FAILED,
    IDENTICAL,
    MOVED,
    NOT_MOVABLE,
    PROBLEMS,
    UPDATED,
    KeyReport,
    Progress,
    summary,
)

__all__ = [
    "CONFLICT",
    "FAILED",
    "IDENTICAL",
    "MOVED",
    "NOT_MOVABLE",
    "PROBLEMS",
    "UPDATED",
    "KeyReport",
    "MigrationError",
    "Progress",
    "VaultClient",
    "migrate_from",
    "migrate_to",
    "services_yaml",
    "summary",
]
