"""Several nodes on one PostgreSQL: changes reach every node's caches at once, and background jobs run on one
node at a time.

- ``PgNotify`` (an ``Invalidator`` transport) sends ``pg_notify`` inside the writing transaction, so the
  notification goes out with the commit and never for a rolled-back write.
- ``PgCluster`` keeps one dedicated asyncpg connection per node. It LISTENs and publishes other nodes'
  changes to this node's caches; when the connection drops it reconnects with backoff (at once when the
  database watch sees the database back) and flushes every cache (it may have missed notifications). Until
  it is back, the caches ask the database before answering (``DatabaseWatch.hears_changes``). The same
  connection holds a session-level advisory lock per background job: the node holding it runs the job,
  the others skip; when that node dies PostgreSQL drops its session and its locks, and another node takes
  the job at its next run.

On SQLite (several processes on one file), ``SqliteChangeLog`` inserts the same payload into
``change_log`` in the writing transaction and ``SqlitePoller`` reads new rows every ``POLL_INTERVAL``; the
background jobs run in the process holding an exclusive ``flock`` on ``<database file>.jobs.lock``
(``SqliteJobLock``), released by the kernel when that process ends.

Changes travel as JSON of ``dataclasses.asdict(Change)``, so a field added to ``Change`` travels with no
change here.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import time
import uuid
from collections.abc import Callable, Iterable
from typing import Any

import asyncpg
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from kms_service.service.invalidation import Change, Invalidator
from kms_service.storage.database import create_engine

try:
    import fcntl
except ImportError:  # pragma: no cover - not on Windows: every process runs the jobs there
    fcntl = None

log = logging.getLogger(__name__)

CHANNEL = "kms_changes"
# PostgreSQL refuses a NOTIFY payload of 8000 bytes or more; stay clear of it.
MAX_PAYLOAD = 7900
# How often the dedicated connection is checked (a dead peer sends nothing), and the backoff bounds.
KEEPALIVE_INTERVAL = 5.0
BACKOFF_FIRST, BACKOFF_MAX = 0.1, 5.0
CONNECT_TIMEOUT = 10.0
# Advisory lock keys (two int4s): a constant class for this service and one number per job.
JOB_LOCK_CLASS = 0x6B6D73  # "kms"
JOB_LOCK_IDS = {"token reaper": 1, "key auto-rotation": 2}


def new_node_id() -> str:
    return uuid.uuid4().hex[:16]


# The nodes a node remembers having heard from (the oldest forgotten first past it).
MAX_HEARD = 256


def heard_from(heard: dict[str, float], node: str | None) -> None:
    """Note that ``node`` wrote a change now (the console's "nodes seen")."""
    if node is None:
        return
    heard.pop(node, None)
    heard[node] = time.time()
    if len(heard) > MAX_HEARD:
        del heard[next(iter(heard))]


def encode(node: str, changes: Iterable[Change]) -> str:
    """One notification's payload; when the changes do not fit, a flush of every cache of their kinds."""
    changes = list(changes)
    payload = json.dumps({"node": node, "changes": [dataclasses.asdict(c) for c in changes]}, separators=(",", ":"))
    if len(payload.encode()) <= MAX_PAYLOAD:
        return payload
    kinds = sorted({c.kind for c in changes})
    payload = json.dumps({"node": node, "flush": kinds}, separators=(",", ":"))
    if len(payload.encode()) <= MAX_PAYLOAD:
        return payload
    return json.dumps({"node": node, "flush": None})


def decode(payload: str) -> tuple[str | None, list[Change] | None]:
    """(sender, changes); changes None means flush every cache (also for a payload this node cannot read,
    e.g. from a newer release during a rolling upgrade)."""
    try:
        message = json.loads(payload)
        node = message.get("node")
        if "changes" in message:
            names = {f.name for f in dataclasses.fields(Change)}
            changes = []
            for item in message["changes"]:
                if set(item) - names:
                    return node, None  # a field this release does not know: it may matter, drop everything
                changes.append(Change(**item))
            return node, changes
        kinds = message.get("flush")
        return node, None if kinds is None else [Change(kind=kind) for kind in kinds]
    except (ValueError, TypeError, AttributeError):
        log.warning("unreadable change notification; dropping every cache")
        return None, None


class PgNotify:
    """Transport: ``pg_notify`` in the writing transaction (delivered by PostgreSQL only on commit)."""

    def __init__(self, node: str) -> None:
        self.node = node

    async def in_transaction(self, connection: Any, changes: list[Change]) -> None:
        await connection.execute(
            text("SELECT pg_notify(:channel, :payload)"), {"channel": CHANNEL, "payload": encode(self.node, changes)}
        )


def asyncpg_connect_args(engine: AsyncEngine) -> dict[str, Any]:
    """asyncpg.connect arguments for the engine's own URL (host, port, user, password, database, ssl, ...)."""
    _, params = engine.dialect.create_connect_args(engine.url)
    params = dict(params)
    # Options of SQLAlchemy's adapter, not of asyncpg.connect.
    for name in ("prepared_statement_cache_size", "prepared_statement_name_func", "async_fallback"):
        params.pop(name, None)
    return params


def application_name(node: str) -> str:
    """How the dedicated connection shows in pg_stat_activity (which node holds which job's lock)."""
    return f"kms-service node {node} pid {os.getpid()}"


class PgCluster:
    """The dedicated connection: LISTEN for other nodes' changes, and hold the background jobs' locks."""

    def __init__(
        self,
        engine: AsyncEngine,
        invalidator: Invalidator,
        node: str,
        on_unreachable: Callable[[str], None] | None = None,
        on_hearing: Callable[[bool], None] | None = None,
    ) -> None:
        self._connect_args = asyncpg_connect_args(engine)
        # Told when PostgreSQL cannot be reached at all (the node's DatabaseWatch): the listener is often the
        # first to know, before any request needs the database.
        self._on_unreachable = on_unreachable
        # Told whether it is listening (the node's DatabaseWatch: its caches trust nothing while it is not).
        self._on_hearing = on_hearing or (lambda _heard: None)
        self._retry_now = asyncio.Event()  # set: skip the rest of the backoff
        self._invalidator = invalidator
        self.node = node
        self.heard: dict[str, float] = {}  # other nodes (and CLI processes) by id: when their last change came
        self._conn: asyncpg.Connection | None = None
        self._lock = asyncio.Lock()  # one query at a time on the connection
        self._held: set[str] = set()
        self._task: asyncio.Task | None = None
        self._listening = asyncio.Event()
        self.connects = 0  # how many times LISTEN was (re-)established

    async def start(self, wait: float = CONNECT_TIMEOUT) -> None:
        """Start listening; waits (up to ``wait`` s) for the first LISTEN, then carries on in the background."""
        self._on_hearing(False)
        self._task = asyncio.create_task(self._run(), name="kms change listener")
        try:
            await asyncio.wait_for(self._listening.wait(), wait)
        except TimeoutError:
            log.warning("change listener not connected yet; every request asks the database until it is")

    def reconnect_now(self) -> None:
        """The database is back: try to listen again at once rather than at the end of the backoff."""
        self._retry_now.set()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        await self._close()

    async def _run(self) -> None:
        delay = BACKOFF_FIRST
        while True:
            lost = asyncio.Event()
            try:
                conn = await asyncpg.connect(
                    timeout=CONNECT_TIMEOUT,
                    **{
                        **self._connect_args,
                        "server_settings": {
                            **self._connect_args.get("server_settings", {}),
                            "application_name": application_name(self.node),
                        },
                    },
                )
                conn.add_termination_listener(lambda _conn, lost=lost: lost.set())
                await conn.add_listener(CHANNEL, self._on_notification)
                self._conn = conn
                self.connects += 1
                # Anything committed before LISTEN took effect was not heard: forget it all (on the first
                # connection this drops what start-up cached).
                self._invalidator.flush_all()
                if self.connects > 1:
                    log.info("change listener reconnected; dropped every cache")
                self._listening.set()
                self._on_hearing(True)
                delay = BACKOFF_FIRST
                while not lost.is_set():
                    try:
                        await asyncio.wait_for(lost.wait(), KEEPALIVE_INTERVAL)
                    except TimeoutError:
                        async with self._lock:
                            await conn.execute("SELECT 1", timeout=KEEPALIVE_INTERVAL)
                log.warning("change listener lost its connection; reconnecting")
            except asyncio.CancelledError:
                raise
            except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.warning("change listener: %s: %s; retrying in %.1f s", type(exc).__name__, exc, delay)
                if isinstance(exc, OSError) and self._on_unreachable is not None:  # TimeoutError is one too
                    self._on_unreachable(f"{type(exc).__name__}: {exc.strerror or exc}")
            except Exception:
                # Never let the listener end: without it this node would only see changes within --cache-ttl.
                log.exception("change listener failed; retrying in %.1f s", delay)
            finally:
                self._on_hearing(False)
                self._listening.clear()
                await self._close()
            self._retry_now.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._retry_now.wait(), delay)
            delay = min(delay * 2, BACKOFF_MAX)

    async def _close(self) -> None:
        conn, self._conn = self._conn, None
        if self._held:
            log.info("released background job(s) %s", ", ".join(sorted(self._held)))
        self._held.clear()
        if conn is not None and not conn.is_closed():
            try:
                await asyncio.wait_for(conn.close(), 2)
            except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError):
                conn.terminate()

    def _on_notification(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        node, changes = decode(payload)
        if node == self.node:
            return  # our own write: published locally at commit
        heard_from(self.heard, node)
        if changes is None:
            self._invalidator.flush_all()
        else:
            self._invalidator.publish(changes)

    async def leads(self, job: str) -> bool:
        """Whether this node runs ``job`` now: it holds (or just took) the job's advisory lock on the live
        dedicated connection. False while that connection is down: another node may hold the lock."""
        conn = self._conn
        if conn is None or conn.is_closed():
            return False
        job_id = JOB_LOCK_IDS[job]
        try:
            async with self._lock:
                if job in self._held:
                    await conn.execute("SELECT 1", timeout=KEEPALIVE_INTERVAL)  # the session (and lock) lives
                    return True
                got = await conn.fetchval(
                    "SELECT pg_try_advisory_lock($1, $2)", JOB_LOCK_CLASS, job_id, timeout=KEEPALIVE_INTERVAL
                )
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            log.warning("%s: cannot check its lock (%s); skipping this run", job, type(exc).__name__)
            return False
        if got and conn is self._conn:
            self._held.add(job)
            log.info("%s runs on this node (node %s) from now on", job, self.node)
            return True
        return False


# -- SQLite: several processes on one database file --------------------------------------------------------

# How often each serving process reads the change log, and how many rows writers keep in it.
POLL_INTERVAL = 0.15
CHANGE_LOG_KEEP = 1000


class SqliteChangeLog:
    """Transport: a row in ``change_log`` in the writing transaction (other processes read it by polling)."""

    def __init__(self, node: str) -> None:
        self.node = node

    async def in_transaction(self, connection: Any, changes: list[Change]) -> None:
        result = await connection.execute(
            text("INSERT INTO change_log (payload) VALUES (:payload)"), {"payload": encode(self.node, changes)}
        )
        newest = result.lastrowid
        if newest is not None and newest % 100 == 0:
            await connection.execute(text("DELETE FROM change_log WHERE id <= :old"), {"old": newest - CHANGE_LOG_KEEP})


class SqlitePoller:
    """Reads the rows other processes added to ``change_log`` every ``POLL_INTERVAL`` and publishes them; a
    gap (rows pruned before this process read them) or a failed read drops every cache. It polls through
    an engine of its own, so the service's pool (and what tests count on it) sees none of it."""

    def __init__(self, engine: AsyncEngine, invalidator: Invalidator, node: str) -> None:
        self._engine = create_engine(engine.url.render_as_string(hide_password=False))
        self._invalidator = invalidator
        self.node = node
        self.heard: dict[str, float] = {}  # other nodes (and CLI processes) by id: when their last change came
        self._seen: int | None = None
        self._task: asyncio.Task | None = None

    async def start(self) -> None:
        self._seen = await self._newest()
        self._task = asyncio.create_task(self._run(), name="kms change log poller")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        await self._engine.dispose()

    async def _newest(self) -> int:
        async with self._engine.connect() as conn:
            return (await conn.execute(text("SELECT coalesce(max(id), 0) FROM change_log"))).scalar_one()

    async def _run(self) -> None:
        failed = False
        while True:
            await asyncio.sleep(POLL_INTERVAL)
            try:
                async with self._engine.connect() as conn:
                    query = text("SELECT id, payload FROM change_log WHERE id > :seen ORDER BY id")
                    rows = (await conn.execute(query, {"seen": self._seen})).all()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - a failed poll must not end polling
                if not failed:
                    log.warning("cannot read the change log (%s); retrying", type(exc).__name__)
                failed = True
                continue
            if failed:
                self._invalidator.flush_all()  # changes may have been pruned meanwhile: forget everything
                failed = False
            self.apply(rows)

    def apply(self, rows: Iterable[tuple[int, str]]) -> None:
        for row_id, payload in rows:
            if row_id != self._seen + 1:
                self._invalidator.flush_all()  # rows this process never read were pruned
            self._seen = row_id
            node, changes = decode(payload)
            if node == self.node:
                continue
            heard_from(self.heard, node)
            if changes is None:
                self._invalidator.flush_all()
            else:
                self._invalidator.publish(changes)


class SqliteJobLock:
    """Which process on a SQLite file runs the background jobs: the one holding an exclusive ``flock`` on
    ``<database file>.jobs.lock``. It takes the lock at its first run and keeps it until it closes or dies
    (the kernel drops the lock with the process, even on SIGKILL); the others skip their runs and try again
    at the next, so another process takes over within one interval. ``flock`` locks belong to the open file,
    so two services in one process on one file also take turns."""

    def __init__(self, database: str) -> None:
        self.path = f"{database}.jobs.lock"
        self._fd: int | None = None
        self._announced: set[str] = set()

    def leads(self, job: str) -> bool:
        if fcntl is None:
            return True
        if self._fd is None:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
            except OSError as exc:
                log.warning("%s: cannot open %s (%s); running it here", job, self.path, exc.strerror)
                return True
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                return False
            self._fd = fd
        if job not in self._announced:
            self._announced.add(job)
            log.info("%s runs in this process (pid %d) from now on", job, os.getpid())
        return True

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)
