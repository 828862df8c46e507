"""Usage counters: per key version, encryptions and signatures and the time of last use (hashicorp/vault#13025).

No request writes to the database once warm: a process reserves counts in blocks (one UPDATE per ``BLOCK``
uses of a version, one transaction for every version a request needs), spends them in memory, and gives back
what it did not use once a version has been idle for ``IDLE_GIVE_BACK`` seconds, and at shutdown. Once half a
version's block is spent, the next block is reserved in the background (``_refill``), so a busy version's
requests do not wait for that write (under load, a database round trip waits behind every ready request on
the event loop: hundreds of milliseconds at 256 connections). A use is answered only once a durable
reservation covers it, so a crash loses at most the unused part of two blocks (1,024 uses each, growing
BLOCK_GROWTH-fold up to MAX_BLOCK for a version that spends half its block within FAST_BLOCK seconds; a version
given back when idle starts its next burst with the block it had grown to): the stored count can only be
too high, never too low. The exception is a database outage: within ``--stale-while-down`` a use
that needs a new block is answered on credit (``_Slot.unused`` goes below 0), and the flush stores the debt
once the database is back; a process that dies before then loses those counts (at most the window's
traffic, far below the margin between the rotation point and 2^32).

A key read shows the stored count less this process's unused reservations (exact on one process; other
processes' unused blocks count until they give them back).

Key ids are never reused (``keys`` is AUTOINCREMENT on SQLite, a sequence on PostgreSQL), so a slot never
outlives its key's row into another key's.

Every operation that spends from a version's counts (``COUNTED``: the ``Key`` methods that encrypt with a
nonce or sign) runs through a ``KeyUse``, got only from ``UsageCounter.using``, which counts what it did
when its block ends: whatever the entry point (an HTTP handler, a batch, the CLI's rewrap), a use that
answers is counted.

The counts feed the nonce budget of 96-bit random-nonce AEAD keys (``KeyType.nonce_budget``): a warning from
``nonce_warning_at`` encryptions of a version, and an automatic rotation from ``nonce_rotation_at``, before
NIST's 2^32 bound for random nonces is near.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy.exc import IntegrityError

from kms_service.errors import InternalError, InvalidRequest
from kms_service.keyring import Key
from kms_service.keytypes import EncryptOptions, SignOptions
from kms_service.service.caching import SingleFlight
from kms_service.service.database_watch import DatabaseWatch
from kms_service.service.keys import KeyService
from kms_service.storage import repository as repo
from kms_service.storage.database import Database

log = logging.getLogger(__name__)

BLOCK = 1024
# A version reserving again within FAST_BLOCK seconds of its last reservation (it spent half a block in that
# time) gets a block BLOCK_GROWTH times as large, up to MAX_BLOCK: a busy key reaches it in two reservations,
# then reserves every few seconds, not every few requests. Blocks never shrink while a slot lives, and a
# forgotten slot's size is remembered: a version busy once reserves large blocks from then on (an overcount of
# at most two blocks after a crash, as above).
MAX_BLOCK = 64 * 1024
FAST_BLOCK = 1.0
BLOCK_GROWTH = 8
MAX_REMEMBERED_BLOCKS = 10_000
# After a background reservation failed, the next is tried this much later (a use that finds its block spent
# reserves itself meanwhile, and answers for the outcome).
REFILL_RETRY = 1.0
FLUSH_INTERVAL = 1.0
# A version unused this long gives its unused reservation back (so steady traffic costs no write).
IDLE_GIVE_BACK = 10.0
ENCRYPTIONS = "encryptions"
SIGNATURES = "signatures"
# One nonce-budget log line per key version at most this often.
WARNING_LOG_INTERVAL = 60.0
# The Key operations that spend from a version's counts, and which count: each is called through KeyUse
# only (tests/test_usage.py reads the code base to hold every caller to it).
COUNTED = {"encrypt": ENCRYPTIONS, "encrypt_many": ENCRYPTIONS, "rewrap": ENCRYPTIONS, "sign": SIGNATURES}


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class _Slot:
    """One (key, version, count) of this process: ``reserved`` is covered by the database, ``used`` spent."""

    reserved: int = 0
    used: int = 0
    # The stored total after this process's last reservation (others' reservations add to it).
    stored: int = 0
    last_used_wall: float | None = None  # time.time(): a datetime only when read (cheaper per use)
    last_used: float = 0.0  # monotonic, for the idle give-back
    warned_at: float = float("-inf")
    block: int = BLOCK  # the next reservation's size
    reserved_at: float = float("-inf")  # monotonic, of the last reservation
    refilling: bool = False  # a background reservation is under way (UsageCounter._refill)
    refill_failed_at: float = float("-inf")  # monotonic: no other background try for REFILL_RETRY seconds

    @property
    def unused(self) -> int:
        return self.reserved - self.used

    @property
    def last_used_at(self) -> datetime | None:
        return None if self.last_used_wall is None else datetime.fromtimestamp(self.last_used_wall, UTC)


class KeyUse:
    """One request's use of a key (a CLI chunk's): the operations of ``COUNTED``, each recording the versions
    it used. Got from ``UsageCounter.using`` only, which counts them when its block ends; refused after.
    Thread-safe as far as a handler needs (a batch's slow items run in worker threads): appends only."""

    def __init__(self, key: Key) -> None:
        self._key = key
        self._used: dict[str, list[int]] = {ENCRYPTIONS: [], SIGNATURES: []}
        self._open = True

    def encrypt(self, plaintext: bytes, options: EncryptOptions, key_version: int = 0) -> tuple[str, int]:
        self._check_open()
        ciphertext, version = self._key.encrypt(plaintext, options, key_version)
        self._used[ENCRYPTIONS].append(version)
        return ciphertext, version

    def encrypt_many(
        self, plaintexts: list[bytes], options: EncryptOptions, key_version: int = 0
    ) -> tuple[list[str], int]:
        self._check_open()
        ciphertexts, version = self._key.encrypt_many(plaintexts, options, key_version)
        self._used[ENCRYPTIONS].extend([version] * len(ciphertexts))
        return ciphertexts, version

    def rewrap(
        self,
        ciphertext: str,
        options: EncryptOptions,
        key_version: int = 0,
        encrypt_options: EncryptOptions | None = None,
    ) -> tuple[str, int]:
        self._check_open()
        rewrapped, version = self._key.rewrap(ciphertext, options, key_version, encrypt_options)
        self._used[ENCRYPTIONS].append(version)
        return rewrapped, version

    def sign(self, data: bytes, options: SignOptions, key_version: int = 0) -> tuple[str, int]:
        self._check_open()
        signature, version = self._key.sign(data, options, key_version)
        self._used[SIGNATURES].append(version)
        return signature, version

    def _check_open(self) -> None:
        if not self._open:
            raise InternalError("a key use was used after it was counted")

    def close(self) -> dict[str, list[int]]:
        """No operation from now on; the versions each count used."""
        self._open = False
        return self._used


class UsageCounter:
    def __init__(self, db: Database, nonce_warning_at: int, nonce_rotation_at: int, *, watch: DatabaseWatch) -> None:
        self._db = db
        self._watch = watch
        self._slots: dict[tuple[int, int, str], _Slot] = {}
        self.nonce_warning_at = nonce_warning_at
        self.nonce_rotation_at = nonce_rotation_at
        self._rotations: dict[tuple[int, int], asyncio.Task] = {}
        self._refills: set[asyncio.Task] = set()  # background reservations under way (a reference each)
        # The block a forgotten slot had grown to, for its next burst (bounded: MAX_REMEMBERED_BLOCKS).
        self._blocks: dict[tuple[int, int, str], int] = {}
        # Reservations are rare (one per BLOCK uses): one at a time per (key, count) keeps each request to one
        # transaction. Those waiting for one all wake when it ends (SingleFlight, not a lock: see there); a
        # burst over many keys reserves for each key at once, its waiters woken by their own key's reservation.
        self._reserving = SingleFlight()

    @asynccontextmanager
    async def using(
        self, key: Key, key_service: KeyService | None, warn: Callable[[str], None]
    ) -> AsyncIterator[KeyUse]:
        """``key``'s counted operations for one request: what the block did is counted (durably) as it
        ends, before the caller answers; a nonce budget running out is a warning (``warn``), and ``key_service``
        (the key's mount) rotates a key past it. A block that raises answers nothing of what it made, and
        counts nothing."""
        use = KeyUse(key)
        try:
            yield use
        finally:
            used = use.close()
        for count, versions in used.items():
            if versions:
                for warning in await self.spend(key, count, versions, key_service):
                    warn(warning)

    async def spend(
        self, key: Key, count: str, versions: Iterable[int], key_service: KeyService | None = None
    ) -> list[str]:
        """Count one use per entry of ``versions``, durably before the caller answers. Returns warnings for
        the response (a nonce budget running out); ``key_service`` (the key's mount) rotates a key past it."""
        if not key.key_id:
            return []
        if type(versions) is list and len(versions) == 1:  # one item, a reservation covering it: most requests
            slot = self._slots.get((key.key_id, versions[0], count))
            if slot is not None and slot.used < slot.reserved:
                slot.used += 1
                slot.last_used_wall, slot.last_used = time.time(), time.monotonic()
                self._refill_if_low(key.key_id, versions[0], count, slot)
                if count == ENCRYPTIONS and key.key_type.nonce_budget:
                    return self._nonce_budget(key, versions[0], slot, slot.stored - slot.unused, key_service)
                return []
        per_version: dict[int, int] = {}
        for version in versions:
            per_version[version] = per_version.get(version, 0) + 1
        if not per_version:
            return []
        key_id, found = key.key_id, self._slots
        slots = {}
        for version in per_version:
            slot = found.get((key_id, version, count))
            if slot is None:  # not setdefault: that would build a slot on every use
                # A version busy before it went idle starts with the block it had grown to.
                block = self._blocks.get((key_id, version, count), BLOCK)
                slot = found[(key_id, version, count)] = _Slot(block=block)
            slots[version] = slot
        wall = time.time()
        if any(slots[v].used + n > slots[v].reserved for v, n in per_version.items()):
            waiting = time.monotonic()
            for slot in slots.values():
                slot.last_used = waiting  # in use: the idle give-back (flush) leaves them while this waits
            async with self._reserving((key_id, count)):
                short = {v: n for v, n in per_version.items() if slots[v].used + n > slots[v].reserved}
                if short:
                    now = datetime.fromtimestamp(wall, UTC)
                    try:
                        await self._reserve(key.key_id, count, {v: slots[v] for v in short}, short, now)
                    except Exception as exc:
                        # The database is away: within --stale-while-down, count on credit (flush stores it).
                        if not self._watch.noticed(exc):
                            raise
        moment = time.monotonic()
        warnings = []
        budget = count == ENCRYPTIONS and key.key_type.nonce_budget
        for version, n in per_version.items():
            slot = slots[version]
            slot.used += n
            slot.last_used_wall, slot.last_used = wall, moment
            self._refill_if_low(key_id, version, count, slot)
            if budget:
                total = slot.stored - slot.unused
                warnings += self._nonce_budget(key, version, slot, total, key_service)
        return warnings

    def _refill_if_low(self, key_id: int, version: int, count: str, slot: _Slot) -> None:
        """Past half its block, reserve ``slot``'s next one in the background (``_refill``), once at a time."""
        if slot.reserved - slot.used >= slot.block // 2 or slot.refilling:
            return
        if self._watch.outage.down_since is not None:
            return  # the database is away: uses past the block go on credit (spend), not here
        if time.monotonic() - slot.refill_failed_at < REFILL_RETRY:
            return
        slot.refilling = True
        task = asyncio.get_running_loop().create_task(self._refill(key_id, version, count, slot))
        self._refills.add(task)
        task.add_done_callback(self._refills.discard)

    async def _refill(self, key_id: int, version: int, count: str, slot: _Slot) -> None:
        """Reserve ``slot``'s next block before its uses run out. A failure is left to the use that then
        finds the block spent: it reserves itself and answers for the outcome."""
        try:
            async with self._reserving((key_id, count)):
                if self._slots.get((key_id, version, count)) is not slot:
                    return  # given back meanwhile (idle): nothing to refill
                if slot.reserved - slot.used >= slot.block // 2:
                    return  # a use reserved meanwhile
                await self._reserve(key_id, count, {version: slot}, {version: 1}, utcnow())
        except Exception as exc:
            slot.refill_failed_at = time.monotonic()
            self._watch.noticed(exc)
            log.debug("background usage reservation failed: %s", type(exc).__name__)
        finally:
            slot.refilling = False

    async def _reserve(
        self, key_id: int, count: str, slots: dict[int, _Slot], needs: dict[int, int], now: datetime
    ) -> None:
        """One transaction reserving a block for every version that is short (``now``: the use's time)."""
        moment = time.monotonic()
        for slot in slots.values():
            if moment - slot.reserved_at < FAST_BLOCK:
                slot.block = min(MAX_BLOCK, slot.block * BLOCK_GROWTH)
        blocks = {v: max(slots[v].block, slots[v].used + needs[v] - slots[v].reserved) for v in slots}
        try:
            async with self._db.writing() as session:
                stored = {
                    v: await repo.reserve_usage(session, key_id, v, count, block, now) for v, block in blocks.items()
                }
        except IntegrityError:
            # A version was trimmed or the key deleted meanwhile: the request is refused, not answered uncounted.
            raise InvalidRequest("the key or version was deleted while in use; retry") from None
        for version, block in blocks.items():
            slots[version].reserved += block
            slots[version].stored = stored[version]
            slots[version].reserved_at = moment

    def _nonce_budget(
        self, key: Key, version: int, slot: _Slot, total: int, key_service: KeyService | None
    ) -> list[str]:
        if total < self.nonce_warning_at:
            return []
        text = (
            f"key {key.name} version {version} has made about {total} encryptions with random 96-bit nonces; "
            "rotate it (the safe bound is 2^32)"
        )
        now = time.monotonic()
        if now - slot.warned_at >= WARNING_LOG_INTERVAL:
            slot.warned_at = now
            log.warning("%s", text)
        if total >= self.nonce_rotation_at and version == key.latest_version and key_service is not None:
            self._rotate(key_service, key, version)
        return [text]

    def _rotate(self, key_service: KeyService, key: Key, version: int) -> None:
        """Rotate the key in the background, once: the rotation re-checks under the row lock that
        ``version`` is still the latest, so nodes racing here add one version."""
        task_key = (key.key_id, version)
        if task_key in self._rotations:
            return

        async def rotate() -> None:
            try:
                if await key_service.rotate(key.name, only_if_latest=version) is not None:
                    log.warning("rotated key %s: version %d reached its nonce budget", key.name, version)
            except Exception:
                log.exception("rotating key %s past its nonce budget failed; the next use retries", key.name)
            finally:
                self._rotations.pop(task_key, None)

        self._rotations[task_key] = asyncio.get_running_loop().create_task(rotate())

    async def flush(self, idle_for: float = IDLE_GIVE_BACK) -> None:
        """Give back the unused reservations of versions idle for ``idle_for`` seconds (0: all, at shutdown),
        in one transaction, and forget those slots (memory stays bounded by the versions in use)."""
        if idle_for == 0 and self._refills:  # at shutdown: what they reserve is given back below too
            await asyncio.gather(*self._refills, return_exceptions=True)
        # The local reservations shrink before the give-back is awaited: a use arriving meanwhile reserves a
        # new block instead of spending what is being given back (which would undercount).
        now = time.monotonic()
        returned = []
        for slot_key, slot in list(self._slots.items()):
            if now - slot.last_used < idle_for or slot.unused < 0 or slot.refilling:
                continue  # in use, owing uses made on credit (stored below), or its next block being reserved
            if slot.unused > 0:
                returned.append((*slot_key, slot.unused, slot.last_used_at or utcnow()))
            del self._slots[slot_key]
            if slot.block > BLOCK:
                if len(self._blocks) >= MAX_REMEMBERED_BLOCKS:
                    self._blocks.clear()
                self._blocks[slot_key] = slot.block
        if returned:
            async with self._db.writing() as session:
                for key_id, version, count, unused, last_used_at in returned:
                    await repo.give_back_usage(session, key_id, version, count, unused, last_used_at)
        await self._settle_credit()

    async def _settle_credit(self) -> None:
        """Store the uses answered on credit during a database outage, one version per transaction (rare:
        after an outage); a slot owes until its write commits."""
        if not any(slot.unused < 0 for slot in self._slots.values()):
            return
        for (key_id, version, count), slot in list(self._slots.items()):
            if slot.unused >= 0:
                continue
            async with self._reserving((key_id, count)):  # no reservation of spend's counts the same uses meanwhile
                debt = -slot.unused
                if debt <= 0:
                    continue
                try:
                    async with self._db.writing() as session:
                        stored = await repo.reserve_usage(
                            session, key_id, version, count, debt, slot.last_used_at or utcnow()
                        )
                except IntegrityError:
                    stored = None  # the version was deleted meanwhile: nothing left to count
                slot.reserved += debt
                if stored is not None:
                    slot.stored = stored

    def nonce_budget(self, key: Key) -> dict[str, int] | None:
        """The encryptions of one version after which ``key`` is warned about, then rotated; None for a
        type without a nonce budget. Shown in the key's read so a client warns where the service does."""
        if not key.key_type.nonce_budget:
            return None
        return {"warning_at": self.nonce_warning_at, "rotation_at": self.nonce_rotation_at}

    async def of(self, key: Key) -> dict[str, dict[str, object]]:
        """The key's counts by version: stored, less this process's unused reservations (no write). Read
        while no reservation of the key's runs: one committing between the read and the subtraction would
        count its block as unused without its stored part."""
        async with (
            self._reserving((key.key_id, ENCRYPTIONS)),
            self._reserving((key.key_id, SIGNATURES)),
            self._db.reading() as session,
        ):
            rows = await repo.usage_of(session, key.key_id)
        result: dict[str, dict[str, object]] = {}
        for row in rows:
            if row.version < key.min_decryption_version:
                continue
            entry: dict[str, object] = {}
            last_used = row.last_used_at
            for count in (ENCRYPTIONS, SIGNATURES):
                slot = self._slots.get((key.key_id, row.version, count))
                entry[count] = getattr(row, count) - (slot.unused if slot else 0)
                if slot is not None and slot.last_used_at is not None:
                    # This process's later uses are stored when it gives the reservation back.
                    last_used = max(last_used, slot.last_used_at) if last_used else slot.last_used_at
            entry["last_used"] = last_used.isoformat().replace("+00:00", "Z") if last_used else None
            result[str(row.version)] = dict(sorted(entry.items()))
        return result
