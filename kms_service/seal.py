"""The master key and the server's keyring under it. Pure.

The master key only seals: key material, and the server's own random secrets (token HMAC key, endpoint
token key, cluster id, audit key), which live sealed in the database. Nothing is derived from the master key, so
rotating it (re-sealing every row) changes no token and no key. Sealing is XChaCha20-Poly1305 (libsodium):
192-bit random nonces have no practical usage limit. Every sealed value is bound to where it lives
(``associated_data``), so a sealed row copied to another key, version or secret fails to open.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from nacl import bindings as sodium
from nacl.exceptions import CryptoError

from kms_service.errors import SealError

MASTER_KEY_SIZE = 32
MASTER_KEY_ENV = "KMS_MASTER_KEY"
MASTER_KEY_FILE = "master.key"
_NONCE_SIZE = sodium.crypto_aead_xchacha20poly1305_ietf_NPUBBYTES


class MasterKey:
    def __init__(self, key: bytes) -> None:
        if len(key) != MASTER_KEY_SIZE:
            raise SealError(f"the master key must be {MASTER_KEY_SIZE} bytes")
        self._key = key
        # Non-secret identifier stored beside each sealed row: which master key sealed it (for KEK rotation).
        self.key_id = hmac.new(key, b"kms-service master key id", hashlib.sha256).hexdigest()[:16]
        # Where it came from (KMS_MASTER_KEY or the file's path), and the file this process just created.
        self.origin = "given"
        self.created_file: Path | None = None

    def __repr__(self) -> str:
        return f"MasterKey(key_id={self.key_id!r})"

    @classmethod
    def generate(cls) -> MasterKey:
        return cls(os.urandom(MASTER_KEY_SIZE))

    @classmethod
    def from_text(cls, text: str, source: str) -> MasterKey:
        try:
            raw = base64.b64decode(text.strip().encode("ascii"), validate=True)
        except (binascii.Error, UnicodeEncodeError, ValueError):
            raise SealError(f"{source} is not valid base64") from None
        if len(raw) != MASTER_KEY_SIZE:
            raise SealError(f"{source} must hold {MASTER_KEY_SIZE} bytes (base64 of 32 random bytes)")
        return cls(raw)

    @classmethod
    def load(cls, data_dir: Path, environ: dict[str, str] | None = None, create: bool = True) -> MasterKey:
        """From ``KMS_MASTER_KEY``, else ``<data_dir>/master.key`` (created 0600 on first use)."""
        environ = os.environ if environ is None else environ
        if environ.get(MASTER_KEY_ENV):
            key = cls.from_text(environ[MASTER_KEY_ENV], MASTER_KEY_ENV)
            key.origin = MASTER_KEY_ENV
            return key
        path = (Path(data_dir) / MASTER_KEY_FILE).absolute()
        created = False
        if not path.exists():
            if not create:
                raise SealError(f"no master key: set {MASTER_KEY_ENV} or create {path}")
            created = cls._create_file(path)
        try:
            text = path.read_bytes().decode("ascii")
        except UnicodeDecodeError:
            raise SealError(f"{path} is not valid base64 (a master key file holds base64 text)") from None
        except OSError as exc:
            raise SealError(f"{path}: cannot read: {exc.strerror}") from None
        key = cls.from_text(text, str(path))
        key.origin = str(path)
        key.created_file = path if created else None
        return key

    @classmethod
    def _create_file(cls, path: Path) -> bool:
        """Write a new key to a private temporary file, then link it into place: a process starting at
        the same moment either wins or reads the winner's complete file, never a half-written one.
        True: this process's key is the one in place."""
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w", encoding="ascii") as fh:
                fh.write(cls.generate().export() + "\n")
                fh.flush()
                os.fsync(fh.fileno())
            try:
                os.link(tmp, path)
            except FileExistsError:
                return False  # another process created it first; use theirs
        finally:
            tmp.unlink(missing_ok=True)
        return True

    def write_file(self, path: Path) -> None:
        """Write this key to ``path`` (0600), whole or not at all: a temporary file, synced, renamed over."""
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w", encoding="ascii") as fh:
                fh.write(self.export() + "\n")
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        directory = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)

    def export(self) -> str:
        return base64.b64encode(self._key).decode("ascii")

    def seal(self, plaintext: bytes, associated_data: bytes) -> bytes:
        nonce = os.urandom(_NONCE_SIZE)
        return nonce + sodium.crypto_aead_xchacha20poly1305_ietf_encrypt(plaintext, associated_data, nonce, self._key)

    def unseal(self, sealed: bytes, associated_data: bytes) -> bytes:
        nonce, body = sealed[:_NONCE_SIZE], sealed[_NONCE_SIZE:]
        try:
            return sodium.crypto_aead_xchacha20poly1305_ietf_decrypt(body, associated_data, nonce, self._key)
        except (CryptoError, ValueError, TypeError):
            raise SealError("sealed value does not open with this master key") from None

    async def catch_up(self) -> bool:
        """One key is all it has: nothing to catch up with (see ``MasterKeyring.catch_up``)."""
        return False

    def wrap(self, other: MasterKey) -> bytes:
        """``other`` sealed under this key: how a master-key rollover hands the new key to nodes holding the
        old one (and the old to nodes already given the new one)."""
        return self.seal(other._key, master_key_aad(other.key_id, self.key_id))

    def unwrap(self, sealed: bytes, key_id: str) -> MasterKey:
        """The master key ``key_id`` that ``wrap`` sealed under this key."""
        key = MasterKey(self.unseal(sealed, master_key_aad(key_id, self.key_id)))
        if not hmac.compare_digest(key.key_id, key_id):
            raise SealError(f"the sealed master key is not key id {key_id}")
        return key

    def legacy_subkey(self, purpose: str) -> bytes:
        """How releases before the keyring derived their token keys from the master key. Used once, to
        carry an existing database's keys into ``server_secrets`` so its tokens keep working."""
        return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=purpose.encode()).derive(self._key)


class Sealer(Protocol):
    """What seals and opens rows: one ``MasterKey``, or a ``MasterKeyring`` during a rollover."""

    @property
    def key_id(self) -> str: ...

    def seal(self, plaintext: bytes, associated_data: bytes) -> bytes: ...

    def unseal(self, sealed: bytes, associated_data: bytes) -> bytes: ...

    async def catch_up(self) -> bool: ...


class MasterKeyring:
    """The master keys this process accepts: the newest seals, every one opens. It holds one key, and two
    during a master-key rollover (``kms-service master-key rotate`` until ``--finish``), so rows sealed
    under either open while they are re-sealed. The service shares one keyring between all its parts."""

    def __init__(self, key: MasterKey) -> None:
        self.loaded = key  # the key this process was given (KMS_MASTER_KEY or master.key)
        self._sealing = key
        self._keys = {key.key_id: key}
        # Set by the service: looks in the database for a rotation this process has not seen yet.
        self.follow_database: Callable[[], Awaitable[None]] | None = None

    def __repr__(self) -> str:
        return f"MasterKeyring(sealing={self.key_id!r}, accepted={self.key_ids!r})"

    @property
    def key_id(self) -> str:
        return self._sealing.key_id

    @property
    def origin(self) -> str:
        return self.loaded.origin

    @property
    def key_ids(self) -> list[str]:
        return sorted(self._keys)

    def get(self, key_id: str) -> MasterKey | None:
        return self._keys.get(key_id)

    def adopt(self, key: MasterKey) -> None:
        """Seal under ``key`` from now on; keep opening rows sealed under the others."""
        self._keys = {**self._keys, key.key_id: key}
        self._sealing = key

    def accept(self, key: MasterKey) -> None:
        """Open rows sealed under ``key`` too (an older key whose rows are still being re-sealed)."""
        self._keys = {**self._keys, key.key_id: key}

    def retire(self, key_id: str) -> None:
        """Stop accepting ``key_id`` (its rows are all re-sealed). The sealing key is never retired."""
        if key_id != self._sealing.key_id:
            self._keys = {k: v for k, v in self._keys.items() if k != key_id}

    def seal(self, plaintext: bytes, associated_data: bytes) -> bytes:
        return self._sealing.seal(plaintext, associated_data)

    async def catch_up(self) -> bool:
        """A row did not open: it may have been re-sealed under a key this process has not picked up yet
        (it looks every second). Look now; whether the keyring changed, so the caller tries once more."""
        if self.follow_database is None:
            return False
        before = (self.key_id, self.key_ids)
        await self.follow_database()
        return (self.key_id, self.key_ids) != before

    def unseal(self, sealed: bytes, associated_data: bytes) -> bytes:
        # The sealing key first: every row but those not yet re-sealed. A wrong key fails its tag check fast.
        sealing = self._sealing
        keys = self._keys  # one snapshot: adopt/retire replace the dict, never change it
        for key in (sealing, *(k for k in keys.values() if k is not sealing)):
            try:
                return key.unseal(sealed, associated_data)
            except SealError:
                continue
        raise SealError("sealed value does not open with the master key")


def master_key_aad(sealed_key_id: str, under_key_id: str) -> bytes:
    return f"kms-service/master-key/{sealed_key_id}/under/{under_key_id}".encode()


def key_material_aad(key_name: str, version: int, material_format: int) -> bytes:
    # Format 0 rows (raw keys) were sealed without the format; envelopes bind it, so a row's format
    # column cannot be flipped to make one layout be read as the other.
    base = f"kms-service/key-version/{key_name}/{version}"
    return base.encode() if material_format == 0 else f"{base}/format-{material_format}".encode()


def server_secret_aad(name: str) -> bytes:
    return f"kms-service/server-secret/{name}".encode()


def wrapped_response_aad(accessor: str) -> bytes:
    # Bound to the wrapping token's accessor: a sealed response copied to another row fails to open.
    return f"kms-service/wrapped-response/{accessor}".encode()


@dataclass(frozen=True)
class ServerSecrets:
    """The server's own secrets, unsealed from ``server_secrets``."""

    token_hmac_key: bytes
    endpoint_token_key: bytes
    cluster_id: str
    # Hashes secrets in audit records and chains the records (kms_service/audit_records.py); shared by every node.
    audit_key: bytes

    # Row names, and (for databases made before the keyring) the purpose the old release derived them for.
    TOKEN_HMAC_KEY = "token-hmac-key"  # noqa: S105 (row names, not secrets)
    ENDPOINT_TOKEN_KEY = "endpoint-token-key"  # noqa: S105
    CLUSTER_ID = "cluster-id"
    AUDIT_KEY = "audit-key"
    LEGACY_PURPOSES = {TOKEN_HMAC_KEY: "kms-service token hmac", ENDPOINT_TOKEN_KEY: "kms-service endpoint token"}

    @classmethod
    def generate(cls) -> dict[str, bytes]:
        return {
            cls.TOKEN_HMAC_KEY: os.urandom(32),
            cls.ENDPOINT_TOKEN_KEY: os.urandom(32),
            cls.CLUSTER_ID: str(uuid.uuid4()).encode("ascii"),
            cls.AUDIT_KEY: os.urandom(32),
        }

    @classmethod
    def from_values(cls, values: dict[str, bytes]) -> ServerSecrets:
        return cls(
            token_hmac_key=values[cls.TOKEN_HMAC_KEY],
            endpoint_token_key=values[cls.ENDPOINT_TOKEN_KEY],
            cluster_id=values[cls.CLUSTER_ID].decode("ascii"),
            audit_key=values[cls.AUDIT_KEY],
        )


SEAL_CHECK_AAD = b"kms-service/seal-check"
SEAL_CHECK_PLAINTEXT = b"kms-service master key check"
