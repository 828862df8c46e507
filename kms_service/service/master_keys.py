"""Master-key rotation while nodes keep serving (``kms-service master-key rotate``).

1. ``start``: a new master key; its check row, and ``master_key_rollover`` holding the new key sealed under
   the old and the old under the new, commit together. From then on a node holding either key opens every
   row, and every node seals under the new key: serving nodes learn of it within ``CHECK_INTERVAL``
   (``refresh``, a background job on every node), starting nodes at once (``KMS.open``).
2. ``reseal``: batches of rows not sealed under the new key are opened and sealed again, each batch one
   transaction, each row replaced only if it is still what was read. A crash loses at most the batch under
   way; running it again picks up what is left. Rows a lagging node writes under the old key meanwhile are
   found by the next pass (the query is "not under the new key", not a position).
3. ``finish``: only when given the new key (the key that remains is one the operator holds), no earlier
   than ``ADOPTION_BOUND`` after the start (every node seals under the new key by then), a last pass, a
   proof that the given key alone opens every sealed row, then the old key's check row and the rollover go
   in one transaction: the old key opens the database no more, and every node drops it from memory.

Nothing is derived from the master key, so no token, key or ciphertext changes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from kms_service.errors import ConfigError, SealError
from kms_service.mounts import key_ref
from kms_service.seal import (
    MASTER_KEY_ENV,
    SEAL_CHECK_AAD,
    SEAL_CHECK_PLAINTEXT,
    MasterKey,
    MasterKeyring,
    key_material_aad,
    server_secret_aad,
    wrapped_response_aad,
)
from kms_service.storage import models as m
from kms_service.storage import repository as repo
from kms_service.storage.database import Database

log = logging.getLogger(__name__)

# Every serving node looks for a rollover this often (one small query) ...
CHECK_INTERVAL = 1.0
# ... so well within this bound every node seals under the new key; --finish waits for it.
ADOPTION_BOUND = 10.0
# The re-seal starts this long after the rotation, when serving nodes have the new key (a node that has not
# yet opens a re-sealed row anyway: a row that fails to open makes it look at once, ``catch_up``).
RESEAL_DELAY = 3 * CHECK_INTERVAL
DEFAULT_BATCH_SIZE = 500
# Passes --finish makes before it gives up on rows that keep appearing under the old key.
FINISH_ATTEMPTS = 5


@dataclass(frozen=True)
class Rollover:
    old_key_id: str
    new_key_id: str
    started_at: datetime
    resumed: bool = False


@dataclass
class Progress:
    versions: int = 0
    secrets: int = 0
    batches: int = 0
    wrapped_responses: int = 0


@dataclass(frozen=True)
class Status:
    accepted: list[str]  # master key ids with a check row (two during a rollover)
    rollover: Rollover | None
    rows: dict[str, dict[str, int]]  # table -> master key id -> rows it sealed

    @property
    def remaining(self) -> int:
        """Rows a rollover has still to re-seal."""
        return 0 if self.rollover is None else rows_left(self.rows, self.rollover.new_key_id)


def rows_left(rows: dict[str, dict[str, int]], new_key_id: str) -> int:
    return sum(n for table in rows.values() for key_id, n in table.items() if key_id != new_key_id)


class MasterKeys:
    """The master keys of one process (its ``MasterKeyring``) kept in step with the database."""

    def __init__(self, db: Database, keyring: MasterKeyring) -> None:
        self._db = db
        self.keyring = keyring
        keyring.follow_database = self.refresh
        self._warned_retired = False
        self._warned_loaded = False

    async def refresh(self) -> None:
        """Adopt a rollover's new key, accept its old one; drop keys a finished rollover retired."""
        async with self._db.reading() as session:
            rollover = await repo.get_rollover(session)
            accepted = set(await repo.seal_check_ids(session))
        self.follow(rollover, accepted)

    def follow(self, rollover: m.MasterKeyRollover | None, accepted: set[str]) -> None:
        keyring = self.keyring
        if rollover is not None:
            new, old = keyring.get(rollover.new_key_id), keyring.get(rollover.old_key_id)
            if new is None and old is not None:
                new = old.unwrap(rollover.new_key_sealed, rollover.new_key_id)
            if old is None and new is not None:
                old = new.unwrap(rollover.old_key_sealed, rollover.old_key_id)
            if new is None or old is None:
                raise SealError(
                    f"a master-key rotation from {rollover.old_key_id} to {rollover.new_key_id} is under way and "
                    f"this process holds neither key (it has {', '.join(keyring.key_ids)})"
                )
            if keyring.key_id != new.key_id:
                keyring.adopt(new)
                log.info("master-key rotation: sealing under master key %s from now on", new.key_id)
            keyring.accept(old)
        for key_id in keyring.key_ids:
            if key_id not in accepted and key_id != keyring.key_id:
                keyring.retire(key_id)
                log.info("master-key rotation finished: master key %s retired", key_id)
        if keyring.key_id not in accepted and not self._warned_retired:
            self._warned_retired = True
            log.error(
                "this process seals under master key %s, which the database no longer accepts: restart it with "
                "the current master key",
                keyring.key_id,
            )
        elif keyring.loaded.key_id not in accepted and not self._warned_loaded and keyring.key_id in accepted:
            # It serves on (it adopted the new key), but it was given the retired one: unless its key file now
            # holds the current key, it would not start again.
            self._warned_loaded = True
            if _file_holds(keyring.loaded.origin, accepted):
                return
            log.error(
                "this process was started with master key %s (%s), which the database no longer accepts: give it "
                "the current master key %s before it restarts, or it will not start",
                keyring.loaded.key_id,
                keyring.loaded.origin,
                keyring.key_id,
            )

    async def status(self) -> Status:
        async with self._db.reading() as session:
            row = await repo.get_rollover(session)
            accepted = await repo.seal_check_ids(session)
            rows = await repo.rows_by_master_key(session)
        return Status(accepted, _rollover(row), rows)

    async def start(self) -> Rollover:
        """Begin a rotation to a new master key, or resume the one under way. The keyring seals under the
        new key when this returns."""
        candidate = MasterKey.generate()
        async with self._db.writing() as session:
            await repo.serialize_writers(session)
            row = await repo.get_rollover(session)
            if row is None:
                old = self.keyring.get(self.keyring.key_id)
                assert old is not None
                now = datetime.now(UTC)
                await repo.add_seal_check(
                    session, candidate.key_id, candidate.seal(SEAL_CHECK_PLAINTEXT, SEAL_CHECK_AAD), now
                )
                await repo.add_rollover(
                    session, old.key_id, candidate.key_id, old.wrap(candidate), candidate.wrap(old), now
                )
                row = await repo.get_rollover(session)
                resumed = False
            else:
                resumed = True
            accepted = set(await repo.seal_check_ids(session))
            rollover = _rollover(row, resumed)
        self.follow(row, accepted)
        if not resumed:
            await asyncio.sleep(RESEAL_DELAY)
        return rollover

    async def reseal(
        self, batch_size: int = DEFAULT_BATCH_SIZE, on_batch: Callable[[Progress], None] | None = None
    ) -> Progress:
        """Re-seal every row not sealed under the keyring's sealing key, ``batch_size`` rows a transaction."""
        target = self.keyring.key_id
        progress = Progress()
        while True:
            async with self._db.writing() as session:
                items = await repo.versions_not_sealed_with(session, target, batch_size)
                resealed = []
                for item in items:
                    aad = key_material_aad(key_ref(item.mount_path, item.key_name), item.version, item.material_format)
                    try:
                        plaintext = self.keyring.unseal(item.sealed_material, aad)
                    except SealError:
                        raise SealError(
                            f"key {key_ref(item.mount_path, item.key_name)} version {item.version} opens with no "
                            f"master key this process holds ({', '.join(self.keyring.key_ids)})"
                        ) from None
                    resealed.append((item, self.keyring.seal(plaintext, aad)))
                progress.versions += await repo.reseal_versions_if_unchanged(session, resealed, target)
            if not items:
                break
            progress.batches += 1
            if on_batch is not None:
                on_batch(progress)
        while True:
            async with self._db.writing() as session:
                secrets = await repo.secrets_not_sealed_with(session, target)
                for secret in secrets:
                    aad = server_secret_aad(secret.name)
                    try:
                        plaintext = self.keyring.unseal(secret.sealed_value, aad)
                    except SealError:
                        raise SealError(
                            f"server secret '{secret.name}' opens with no master key this process holds"
                        ) from None
                    sealed = self.keyring.seal(plaintext, aad)
                    if await repo.reseal_secret_if_unchanged(session, secret.name, secret.sealed_value, sealed, target):
                        progress.secrets += 1
            if not secrets:
                break
        while True:
            async with self._db.writing() as session:
                wrapped = await repo.wrapped_responses_not_sealed_with(session, target, batch_size)
                for accessor, old in wrapped:
                    aad = wrapped_response_aad(accessor)
                    try:
                        plaintext = self.keyring.unseal(old, aad)
                    except SealError:
                        raise SealError(
                            f"the wrapped response of accessor {accessor} opens with no master key this process holds"
                        ) from None
                    sealed = self.keyring.seal(plaintext, aad)
                    if await repo.reseal_wrapped_response_if_unchanged(session, accessor, old, sealed, target):
                        progress.wrapped_responses += 1
            if not wrapped:
                break
        return progress

    async def finish(
        self,
        batch_size: int = DEFAULT_BATCH_SIZE,
        on_batch: Callable[[Progress], None] | None = None,
        on_wait: Callable[[float], None] | None = None,
    ) -> str:
        """End the rotation under way: a last re-seal, then retire the old key. Returns the retired key's id.

        Refused, before anything changes, unless this process was given the new key: the key that remains
        must be one the operator holds. Before the old key goes, the given key alone must open every sealed
        row (``prove_opens``)."""
        status = await self.status()
        rollover = status.rollover
        if rollover is None:
            raise ConfigError("no master-key rotation is under way ('kms-service master-key rotate' starts one)")
        given = self.keyring.loaded
        if given.key_id != rollover.new_key_id:
            raise SealError(
                f"refused, nothing changed: this command was given master key {given.key_id} ({given.origin}), the "
                f"one --finish retires; give it the new master key {rollover.new_key_id} ('kms-service master-key "
                "rotate' writes it to a file again and says where) and run --finish again"
            )
        # Every serving node checks every CHECK_INTERVAL: past this bound, none still seals under the old key.
        wait = (rollover.started_at.timestamp() + ADOPTION_BOUND) - datetime.now(UTC).timestamp()
        if wait > 0:
            if on_wait is not None:
                on_wait(wait)
            await asyncio.sleep(wait)
        for _ in range(FINISH_ATTEMPTS):
            await self.reseal(batch_size, on_batch)
            # Rows sealed after this proof are sealed under the same key: a key id names one key.
            await self.prove_opens(given, batch_size)
            async with self._db.writing() as session:
                await repo.serialize_writers(session)
                await repo.hold_sealed_rows(session)
                rows = await repo.rows_by_master_key(session)
                if rows_left(rows, rollover.new_key_id) == 0:
                    await repo.end_rollover(session, rollover.new_key_id, rollover.old_key_id)
                    break
        else:
            raise SealError(
                f"rows keep being written under the old master key {rollover.old_key_id}: a node still seals under "
                "it (check every node reaches the database), then run 'master-key rotate --finish' again"
            )
        await self.refresh()
        return rollover.old_key_id

    async def prove_opens(self, key: MasterKey, batch_size: int = DEFAULT_BATCH_SIZE) -> None:
        """``key`` alone opens the database: its check row, every key version, server secret and wrapped
        response. SealError naming the first that does not (nothing is changed)."""

        def opens(sealed: bytes, aad: bytes, what: str) -> None:
            try:
                key.unseal(sealed, aad)
            except SealError:
                raise SealError(
                    f"refused, nothing changed: master key {key.key_id} does not open {what}, so it cannot be the "
                    "only key of this database"
                ) from None

        async with self._db.reading() as session:
            check = await repo.get_seal_check(session, key.key_id)
            secrets = await repo.server_secrets(session)
        if check is None:
            raise SealError(f"refused, nothing changed: master key {key.key_id} is not one this database accepts")
        opens(check.sealed_value, SEAL_CHECK_AAD, "the database's check row")
        for secret in secrets:
            opens(secret.sealed_value, server_secret_aad(secret.name), f"server secret '{secret.name}'")
        after: tuple[int, int] = (0, 0)
        while True:
            async with self._db.reading() as session:
                versions = await repo.versions_after(session, after, batch_size)
            for item in versions:
                ref = key_ref(item.mount_path, item.key_name)
                aad = key_material_aad(ref, item.version, item.material_format)
                opens(item.sealed_material, aad, f"key {ref} version {item.version}")
            if len(versions) < batch_size:
                break
            after = (versions[-1].key_id, versions[-1].version)
        after_id = 0
        while True:
            async with self._db.reading() as session:
                wrapped = await repo.wrapped_responses_after(session, after_id, batch_size)
            for _row_id, accessor, sealed in wrapped:
                opens(sealed, wrapped_response_aad(accessor), f"the wrapped response of accessor {accessor}")
            if len(wrapped) < batch_size:
                break
            after_id = wrapped[-1][0]


def _file_holds(origin: str, accepted: set[str]) -> bool:
    """Whether ``origin`` is a master key file that now holds one of the ``accepted`` keys."""
    if origin == MASTER_KEY_ENV:
        return False
    try:
        return MasterKey.from_text(Path(origin).read_text(encoding="ascii"), origin).key_id in accepted
    except (OSError, UnicodeDecodeError, SealError):
        return False


def _rollover(row: m.MasterKeyRollover | None, resumed: bool = False) -> Rollover | None:
    if row is None:
        return None
    return Rollover(row.old_key_id, row.new_key_id, row.started_at, resumed)
