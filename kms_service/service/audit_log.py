"""The audit log's sinks and its background flush (the rules are ``kms_service/audit_records.py``).

``AuditLog.record`` runs on the event loop for each request, twice (request, then response), and never
touches the database: the file sink is one ``write`` (to the OS) per record, before the answer leaves;
the database sink queues the line. ``AuditLog.flush`` runs every ``--audit-flush-interval`` off the request
path: it fsyncs the file, then, in one transaction, inserts the queued lines and anchors every chain's head
(``audit_anchors``). A record is accepted when at least one sink took it; when none can, the request is
refused (``AuditUnavailable``, 503), and the next request tries the sinks again, so the service recovers as
soon as a sink can write.

The file is opened ``O_APPEND``: every record is one ``write`` call, which Linux applies whole and in one
piece to a local file, so the workers of ``serve --workers N`` share one file, their records interleaved
line by line and their chains told apart by id (not over NFS). Before each write the sink checks that its
path still names the file it holds (a ``stat``), and on SIGHUP it reopens it: a file moved away by
logrotate is followed by a new one at once, and the chain goes on in it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import stat
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from kms_service import audit_records as audit_rules
from kms_service.audit_records import CHAIN_END, AuditKeys, Chain, serialize
from kms_service.storage import models as m
from kms_service.storage import repository as repo
from kms_service.storage.database import Database

log = logging.getLogger(__name__)


class SinkUnavailable(Exception):
    """A sink could not take a record (the reason is the message, one line)."""


class FileSink:
    name = "file"

    def __init__(self, path: Path) -> None:
        self.path = Path(path).absolute()
        self._fd: int | None = None
        self._identity: tuple[int, int] | None = None
        self._dirty = False
        # A write that failed half-way left part of a line: the next record starts on a new line.
        self._torn = False

    def open(self) -> None:
        """(Re)open the path; the previous file is flushed to disk and closed."""
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise SinkUnavailable(f"cannot open {self.path}: {exc.strerror}") from None
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            os.close(fd)
            raise SinkUnavailable(f"{self.path} is not a regular file")
        old, self._fd, self._identity = self._fd, fd, (info.st_dev, info.st_ino)
        if old is not None:
            self._close(old)

    def _close(self, fd: int) -> None:
        with contextlib.suppress(OSError):
            if self._dirty:
                os.fsync(fd)
        with contextlib.suppress(OSError):
            os.close(fd)

    def _moved(self) -> bool:
        try:
            info = os.stat(self.path)
        except OSError:
            return True
        return (info.st_dev, info.st_ino) != self._identity

    def write(self, line: bytes, chain_id: str, seq: int) -> None:
        if self._fd is None or self._moved():
            self.open()
        assert self._fd is not None
        data = memoryview(b"\n" + line if self._torn else line)
        written = 0
        try:
            while written < len(data):
                written += os.write(self._fd, data[written:])
        except OSError as exc:
            self._torn = written > 0
            raise SinkUnavailable(f"cannot write {self.path}: {exc.strerror}") from None
        self._torn = False
        self._dirty = True

    def sync(self) -> None:
        """fsync what was written so far (in a worker thread)."""
        fd = self._fd
        if fd is not None and self._dirty:
            self._dirty = False
            try:
                os.fsync(fd)
            except OSError as exc:
                self._dirty = True
                raise SinkUnavailable(f"cannot fsync {self.path}: {exc.strerror}") from None

    def close(self) -> None:
        if self._fd is not None:
            self._close(self._fd)
            self._fd = None


class DatabaseSink:
    name = "db"

    def __init__(self, max_pending: int) -> None:
        """``max_pending``: lines it holds waiting for the database at most; past it (the database is down)
        it refuses records, and with no other sink the requests are refused."""
        self.pending: list[tuple[str, int, str]] = []
        self.max_pending = max_pending

    def write(self, line: bytes, chain_id: str, seq: int) -> None:
        if len(self.pending) >= self.max_pending:
            raise SinkUnavailable(f"{len(self.pending)} records wait for the database")
        self.pending.append((chain_id, seq, line.decode().rstrip("\n")))

    def take(self) -> list[tuple[str, int, str]]:
        rows, self.pending = self.pending, []
        return rows

    def give_back(self, rows: list[tuple[str, int, str]]) -> None:
        self.pending = rows + self.pending


Sink = FileSink | DatabaseSink


class AuditLog:
    """One writer's chains (one per sink) and the sinks. ``writer`` names this process (its node id)."""

    def __init__(self, keys: AuditKeys, db: Database, sinks: Sequence[Sink], writer: str) -> None:
        self.keys = keys
        self.db = db
        self.sinks = list(sinks)
        self.chains = {sink.name: Chain(f"{writer}-{sink.name}", keys.chain_key) for sink in self.sinks}
        self._anchored: dict[str, int] = {}
        self._flush_lock = asyncio.Lock()
        self.last_error: str | None = None

    @property
    def devices(self) -> list[str]:
        return [sink.name for sink in self.sinks]

    def record(self, serialized: bytes) -> bool:
        """Write a record (``audit.serialize``'s JSON) to every sink; True if at least one took it (the chain
        of a sink that failed stays where it was: its file shows no gap, only a later timestamp)."""
        taken = False
        for sink in self.sinks:
            chain = self.chains[sink.name]
            line, seq, digest = chain.link(serialized)
            try:
                sink.write(line, chain.id, seq)
            except SinkUnavailable as exc:
                self.last_error = f"audit {sink.name}: {exc}"
                continue
            chain.advance(seq, digest)
            taken = True
        return taken

    def reopen(self) -> None:
        """SIGHUP: reopen the file (logrotate moved it away)."""
        for sink in self.sinks:
            if isinstance(sink, FileSink):
                try:
                    sink.open()
                except SinkUnavailable as exc:
                    log.error("audit log: %s", exc)  # the next request tries again, and is refused meanwhile
                else:
                    log.info("audit log: reopened %s", sink.path)

    async def flush(self, closed: bool = False) -> None:
        """fsync the file, store the database sink's lines and anchor every chain's head, in that order: an
        anchor never names a record a crash could still lose."""
        async with self._flush_lock:
            files = [sink for sink in self.sinks if isinstance(sink, FileSink)]
            # A file's head is taken before its fsync, which then covers every record up to it.
            heads = [(s.name, self.chains[s.name].id, self.chains[s.name].seq, self.chains[s.name].head) for s in files]
            synced = True
            for sink in files:
                try:
                    await asyncio.get_running_loop().run_in_executor(None, sink.sync)
                except SinkUnavailable as exc:
                    synced = False
                    self.last_error = f"audit file: {exc}"
            if not synced:
                heads = []
            # The database sink's lines and head, taken together (no await in between).
            rows: list[tuple[str, int, str]] = []
            for sink in self.sinks:
                if isinstance(sink, DatabaseSink):
                    rows = sink.take()
                    chain = self.chains[sink.name]
                    heads.append((sink.name, chain.id, chain.seq, chain.head))
            to_anchor = [
                (name, chain_id, seq, head)
                for name, chain_id, seq, head in heads
                if seq > 0 and (closed or seq > self._anchored.get(chain_id, 0))
            ]
            if not rows and not to_anchor:
                return
            now = datetime.now(UTC)
            try:
                async with self.db.writing() as session:
                    await repo.add_audit_records(session, rows)
                    for name, chain_id, seq, head in to_anchor:
                        await repo.anchor_audit_chain(session, chain_id, name, seq, head, closed, now)
            except BaseException:
                for sink in self.sinks:
                    if isinstance(sink, DatabaseSink):
                        sink.give_back(rows)
                raise
            for _name, chain_id, seq, _head in to_anchor:
                self._anchored[chain_id] = seq

    async def close(self) -> None:
        """End every chain with a chain-end record, flush and anchor it as closed, close the file."""
        now = datetime.now(UTC).isoformat().replace("+00:00", "Z")
        self.record(serialize({"time": now, "type": CHAIN_END}))
        try:
            await self.flush(closed=True)
        except Exception as exc:  # the database is gone: the chain stays open, as after a crash
            log.error("audit log: could not anchor the end of the chains: %s", type(exc).__name__)
        for sink in self.sinks:
            if isinstance(sink, FileSink):
                sink.close()


async def anchors(db: Database) -> list[dict[str, object]]:
    """Every chain's anchored head (the console's audit page), newest first."""
    async with db.reading() as session:
        rows = await repo.audit_anchors(session)
    return [
        {
            "chain_id": row.chain_id,
            "sink": row.sink,
            "seq": row.seq,
            "closed": row.closed,
            "updated_at": row.updated_at.astimezone(UTC).isoformat().replace("+00:00", "Z"),
        }
        for row in sorted(rows, key=lambda r: r.updated_at, reverse=True)
    ]


def anchors_of(rows: list[m.AuditAnchor], sink: str) -> dict[str, audit_rules.Anchor]:
    """The anchors of one sink's chains, by chain id."""
    return {
        row.chain_id: audit_rules.Anchor(row.seq, row.hash, row.closed, row.started_at, row.updated_at)
        for row in rows
        if row.sink == sink
    }


async def verify_database(db: Database, keys: AuditKeys, since: datetime | None = None) -> audit_rules.Verification:
    """The database sink's records (``audit_records``) checked chain by chain against the anchors."""
    async with db.reading() as session:
        anchored = anchors_of(await repo.audit_anchors(session), "db")
        lines: list[bytes] = []
        after = 0
        while page := await repo.audit_record_lines(session, after, 10_000):
            lines.extend(line.encode() + b"\n" for _, line in page)
            after = page[-1][0]
    return audit_rules.verify(lines, keys.chain_key, anchored, since=since)
