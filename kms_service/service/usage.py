"""Usage counters: per key version, encryptions and signatures and the time of last use (Vault issue #13025).

No request writes to the database: a process reserves counts in blocks (one UPDATE per ``BLOCK`` uses of a
version), spends them in memory, and every ``FLUSH_INTERVAL`` gives back what it reserved and did not use,
so the stored count is exact again. A use is answered only once a durable reservation covers it, so a crash
loses at most the unused part of a block: the stored count can only be too high, never too low.

The counts feed the nonce budget of 96-bit random-nonce AEAD keys (``KeyType.nonce_budget``): a warning from
``nonce_warning_at`` encryptions of a version, and an automatic rotation from ``nonce_rotation_at``, before
NIST's 2^32 bound for random nonces is near.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy.exc import IntegrityError

from kms_service.keyring import Key
from kms_service.service.keys import KeyService
from kms_service.storage import repository as repo
from kms_service.storage.engine import Database

log = logging.getLogger(__name__)

BLOCK = 1024
FLUSH_INTERVAL = 1.0
ENCRYPTIONS = "encryptions"
SIGNATURES = "signatures"
# One nonce-budget log line per key version at most this often.
WARNING_LOG_INTERVAL = 60.0


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class _Slot:
    """One (key, version, count) of this process: ``reserved`` is covered by the database, ``used`` spent."""

    reserved: int = 0
    used: int = 0
    # The stored total after this process's last reservation (others' reservations add to it).
    stored: int = 0
    last_used_at: datetime | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    warned_at: float = float("-inf")


class UsageCounter:
    def __init__(self, db: Database, nonce_warning_at: int, nonce_rotation_at: int) -> None:
        self._db = db
        self._slots: dict[tuple[int, int, str], _Slot] = {}
        self.nonce_warning_at = nonce_warning_at
        self.nonce_rotation_at = nonce_rotation_at
        self._rotations: dict[tuple[int, int], asyncio.Task] = {}

    async def spend(self, key: Key, count: str, versions: Iterable[int], engine: KeyService | None = None) -> list[str]:
        """Count one use per entry of ``versions``, durably before the caller answers. Returns warnings for
        the response (a nonce budget running out); ``engine`` (the key's mount) rotates a key past it."""
        per_version: dict[int, int] = {}
        for version in versions:
            per_version[version] = per_version.get(version, 0) + 1
        warnings = []
        for version, n in per_version.items():
            total = await self._spend(key.key_id, version, count, n)
            if count == ENCRYPTIONS and key.key_type.nonce_budget:
                warnings += self._nonce_budget(key, version, total, engine)
        return warnings

    async def _spend(self, key_id: int, version: int, count: str, n: int) -> int:
        """Spend ``n`` from this process's reservation (reserving more when short); the estimated total."""
        if not key_id:
            return 0
        slot = self._slots.setdefault((key_id, version, count), _Slot())
        if slot.used + n > slot.reserved:
            async with slot.lock:
                if slot.used + n > slot.reserved:
                    block = max(BLOCK, slot.used + n - slot.reserved)
                    try:
                        async with self._db.writing() as session:
                            slot.stored = await repo.reserve_usage(session, key_id, version, count, block, utcnow())
                    except IntegrityError:
                        return 0  # the version was trimmed or deleted meanwhile: nothing left to count
                    slot.reserved += block
        slot.used += n
        slot.last_used_at = utcnow()
        return slot.stored - (slot.reserved - slot.used)

    def _nonce_budget(self, key: Key, version: int, total: int, engine: KeyService | None) -> list[str]:
        if total < self.nonce_warning_at:
            return []
        text = (
            f"key {key.name} version {version} has made about {total} encryptions with random 96-bit nonces; "
            "rotate it (the safe bound is 2^32)"
        )
        slot = self._slots[(key.key_id, version, ENCRYPTIONS)]
        now = time.monotonic()
        if now - slot.warned_at >= WARNING_LOG_INTERVAL:
            slot.warned_at = now
            log.warning("%s", text)
        if total >= self.nonce_rotation_at and version == key.latest_version and engine is not None:
            self._rotate(engine, key, version)
        return [text]

    def _rotate(self, engine: KeyService, key: Key, version: int) -> None:
        """Rotate the key in the background, once: the rotation re-checks under the row lock that
        ``version`` is still the latest, so nodes racing here add one version."""
        task_key = (key.key_id, version)
        if task_key in self._rotations:
            return

        async def rotate() -> None:
            try:
                if await engine.rotate(key.name, only_if_latest=version) is not None:
                    log.warning("rotated key %s: version %d reached its nonce budget", key.name, version)
            except Exception:
                log.exception("rotating key %s past its nonce budget failed; the next use retries", key.name)
                self._rotations.pop(task_key, None)

        self._rotations[task_key] = asyncio.get_running_loop().create_task(rotate())

    async def flush(self) -> None:
        """Give back every unused reservation, so the stored counts are exact (one transaction)."""
        # The local reservations shrink before the give-back is awaited: a use arriving meanwhile reserves a
        # new block instead of spending what is being given back (which would undercount).
        returned = []
        for (key_id, version, count), slot in self._slots.items():
            unused = slot.reserved - slot.used
            if unused > 0:
                slot.reserved -= unused
                slot.stored -= unused
                returned.append((key_id, version, count, unused, slot.last_used_at or utcnow()))
        if not returned:
            return
        async with self._db.writing() as session:
            for key_id, version, count, unused, last_used_at in returned:
                await repo.give_back_usage(session, key_id, version, count, unused, last_used_at)

    async def of(self, key: Key) -> dict[str, dict[str, object]]:
        """The key's stored counts by version (flushed first, so this process's are exact)."""
        await self.flush()
        async with self._db.reading() as session:
            rows = await repo.usage_of(session, key.key_id)
        return {
            str(row.version): {
                "encryptions": row.encryptions,
                "signatures": row.signatures,
                "last_used": row.last_used_at.isoformat().replace("+00:00", "Z") if row.last_used_at else None,
            }
            for row in rows
            if row.version >= key.min_decryption_version
        }
