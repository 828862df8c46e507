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


class UnsupportedOperation(UserError):
    def __init__(self, message: str = "unsupported operation") -> None:
        super().__init__(message)


class PayloadTooLarge(UserError):
    def __init__(self, message: str = "request body too large") -> None:
        super().__init__(message)


class InternalError(KMSError):
    """Something on our side failed; the request may succeed later."""


class RefusedAsInternal(InternalError):
    """The request is at fault, but Vault refuses it with a plain Go error, which its HTTP layer turns into a
    500 (e.g. ``key derivation and convergent encryption not supported for keys of type rsa-2048``, an RSA
    decryption failure, a bad BYOK blob). Kept apart so the status matches Vault while logs and callers can
    still tell it from a failure on our side."""


class ConfigError(KMSError):
    """The services or app YAML is invalid, or conflicts with what the database holds."""


class SealError(KMSError):
    """The master key is missing, malformed, or does not open this database."""
