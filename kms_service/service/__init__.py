"""Application services: keys, tokens and policies over storage, with the in-memory caches.

Each write is one database transaction that records what it changed; the caches hear of it through the
``Invalidator`` once it commits. Once warm, the crypto hot path (token check, key lookup) makes no query.
"""

from kms_service.keyring import KeyConfigChange
from kms_service.service.invalidation import Change, Invalidator, Kind
from kms_service.service.keys import KeyService, utcnow
from kms_service.service.kms import KMS, open_database
from kms_service.service.policies import PolicyService
from kms_service.service.tokens import Principal, TokenService, list_tokens

__all__ = [
    "KMS",
    "Change",
    "Invalidator",
    "KeyConfigChange",
    "KeyService",
    "Kind",
    "PolicyService",
    "Principal",
    "TokenService",
    "list_tokens",
    "open_database",
    "utcnow",
]
