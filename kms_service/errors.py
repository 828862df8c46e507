"""One error hierarchy for the whole service.

The domain raises these; ``kms_service.web.errors`` maps them to HTTP in one place. Messages are shown to
clients, so they must never contain secrets, plaintext or the raw value of a rejected field.
"""


class KMSError(Exception):
    """Base of every error the service raises on purpose."""

    def __init__(self, message: str = "") -> None:
        super().__init__(message)
        self.message = message


class UserError(KMSError):
    """The request is wrong; retrying it unchanged will fail again."""


class InvalidRequest(UserError):
    """Malformed or inconsistent input."""


class PermissionDenied(UserError):
    """No valid token, or the token's policies do not grant the path."""

    def __init__(self, message: str = "permission denied") -> None:
        super().__init__(message)


class NotFound(UserError):
    """A read found nothing (Vault answers these with an empty error list)."""


class UnsupportedPath(UserError):
    def __init__(self, message: str = "unsupported path") -> None:
        super().__init__(message)


class UnknownNamespace(UnsupportedPath):
    """A request named a namespace that does not exist (Vault: 404)."""

    def __init__(self, message: str = "namespace not found") -> None:
        super().__init__(message)


class UnsupportedOperation(UserError):
    def __init__(self, message: str = "unsupported operation") -> None:
        super().__init__(message)


class PayloadTooLarge(UserError):
    def __init__(self, message: str = "request body too large") -> None:
        super().__init__(message)


class RefusedAsServerError(UserError):
    """A refusal of the caller's request that Vault answers with 500 (a plain Go error: backup without
    allow_plaintext_backup, restore onto an existing key, a bad BYOK blob, derivation on an RSA key). Kept,
    because Vault's clients and tests expect that status; it is the caller's doing, so it is not logged as a
    failure, and in a batch it is that item's error."""


class ClientGone(KMSError):
    """The client went away before its request was read; nobody is left to answer."""


class AuditUnavailable(KMSError):
    """No audit sink could record the request: it is refused (fail closed, as Vault)."""


class InternalError(KMSError):
    """Something on our side failed; the request may succeed later."""


class DatabaseUnavailable(KMSError):
    """The database cannot be reached and the request needs it (a write, a lookup nothing cached answers, or
    anything once the --stale-while-down window has passed): 503, and the client may retry later."""

    def __init__(self, message: str = "database unavailable") -> None:
        super().__init__(message)


class ConfigError(KMSError):
    """The services or app YAML is invalid, or conflicts with what the database holds."""


class SealError(KMSError):
    """The master key is missing, malformed, or does not open this database."""
