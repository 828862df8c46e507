"""The transit engine's wrapping key (Vault's ``wrapping_key``): an RSA-4096 key made on first use, whose public
half clients use to wrap keys they import (BYOK). It is stored sealed in ``server_secrets``, so every node
sharing the database uses the same one."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from kms_service.errors import SealError
from kms_service.seal import Sealer, server_secret_aad
from kms_service.storage import repository as repo
from kms_service.storage.database import Database

log = logging.getLogger(__name__)

WRAPPING_KEY_SECRET = "transit-wrapping-key"  # noqa: S105 (a row name, not a secret)
WRAPPING_KEY_BITS = 4096


class WrappingKeyService:
    def __init__(self, db: Database, master_key: Sealer) -> None:
        self._db = db
        self._master_key = master_key
        self._key: rsa.RSAPrivateKey | None = None
        self._lock = asyncio.Lock()

    async def private_key(self) -> rsa.RSAPrivateKey:
        if self._key is None:
            async with self._lock:
                if self._key is None:
                    self._key = await self._load_or_create()
        return self._key

    async def public_key_pem(self) -> str:
        key = await self.private_key()
        pem = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        return pem.decode("ascii")

    async def _load_or_create(self) -> rsa.RSAPrivateKey:
        stored = await self._stored()
        if stored is not None:
            return stored
        # Generated before the write lock (seconds for RSA-4096), in a worker thread.
        fresh = await asyncio.to_thread(rsa.generate_private_key, public_exponent=65537, key_size=WRAPPING_KEY_BITS)
        der = fresh.private_bytes(
            serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        async with self._db.writing() as session:
            await repo.serialize_writers(session)
            if not any(s.name == WRAPPING_KEY_SECRET for s in await repo.server_secrets(session)):
                sealed = self._master_key.seal(der, server_secret_aad(WRAPPING_KEY_SECRET))
                await repo.add_server_secret(
                    session, WRAPPING_KEY_SECRET, sealed, self._master_key.key_id, datetime.now(UTC)
                )
                log.info("created the transit wrapping key (RSA-%d)", WRAPPING_KEY_BITS)
        # Another node may have won the race: the stored key is the one.
        stored = await self._stored()
        assert stored is not None
        return stored

    async def _stored(self) -> rsa.RSAPrivateKey | None:
        async with self._db.reading() as session:
            secrets = {s.name: s for s in await repo.server_secrets(session)}
        secret = secrets.get(WRAPPING_KEY_SECRET)
        if secret is None:
            return None
        aad = server_secret_aad(WRAPPING_KEY_SECRET)
        try:
            der = self._master_key.unseal(secret.sealed_value, aad)
        except SealError:
            if not await self._master_key.catch_up():  # re-sealed under a master key this process lacked?
                raise
            der = self._master_key.unseal(secret.sealed_value, aad)
        key = await asyncio.to_thread(serialization.load_der_private_key, der, None)
        assert isinstance(key, rsa.RSAPrivateKey)
        return key
