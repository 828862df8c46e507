"""Database URLs and engines for SQLite (embedded default) and PostgreSQL (shared by several nodes)."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import asyncpg
from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

from kms_service.errors import ConfigError
from kms_service.storage import DEFAULT_LOCK_TIMEOUT

# Migrations wait for another process's migration to finish, however long it takes on PostgreSQL, and for as
# long as before on SQLite.
SQLITE_MIGRATION_BUSY_TIMEOUT_MS = 30_000
# Execution option marking write transactions (SQLite then takes its write lock at BEGIN).
WRITE_OPTION = "kms_write_transaction"


def unavailable_reason(exc: BaseException) -> str | None:
    """One line saying why the database could not be used, if ``exc`` says it could not (down, unreachable,
    locked, out of disk, the pool exhausted); None for any other failure. Never the SQL or its parameters."""
    if (busy := busy_reason(exc)) is not None:
        return f"database busy: {busy}"
    if isinstance(exc, (OperationalError, InterfaceError)) or (
        isinstance(exc, DBAPIError) and exc.connection_invalidated
    ):
        orig = exc.orig if exc.orig is not None else exc
        text = str(orig).strip().splitlines()
        return f"{type(orig).__name__}: {text[0]}" if text else type(orig).__name__
    if isinstance(exc, PoolTimeout):
        return "no database connection free (pool timeout)"
    if (refused := _refused_reason(exc)) is not None:
        return refused
    if isinstance(exc, (ConnectionError, TimeoutError)) or (isinstance(exc, OSError) and exc.filename is None):
        return f"{type(exc).__name__}: {exc.strerror or exc}"
    return None


def refusal_reason(exc: BaseException) -> str | None:
    """One line for a PostgreSQL server that refused to open a session (no such database, role or password),
    in this service's words; None for any other failure."""
    state = getattr(getattr(exc, "orig", None), "sqlstate", None)
    if not isinstance(exc, DBAPIError) or not isinstance(state, str):
        return None
    message = str(exc.orig).strip().splitlines()[0] if str(exc.orig).strip() else state
    if state == "3D000":  # invalid_catalog_name
        return f"PostgreSQL has no such database ({message}): create it, or check --database-url"
    if state.startswith("28"):  # invalid authorization: an unknown role, a wrong password
        return f"PostgreSQL refused the login ({message}): check --database-url's user and password"
    return None


def describe_fault(exc: BaseException) -> str:
    """One line for a database or operating-system failure (no SQL, no parameters, no traceback)."""
    refused = refusal_reason(exc)
    if refused is not None:
        return refused
    reason = unavailable_reason(exc)
    if reason is not None:
        return f"database unavailable: {reason}"
    if isinstance(exc, DBAPIError):  # the driver's words, without SQLAlchemy's wrapping (or any SQL)
        words = str(exc.orig).strip().splitlines()
        return f"database error: {words[0] if words else type(exc.orig).__name__}"
    if isinstance(exc, OSError):
        where = f"{exc.filename}: " if exc.filename else ""
        return f"{where}{exc.strerror or exc}"
    return f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"


# What a server that went away (stopped, restarting, unreachable) raises, as opposed to a failing statement.
_SERVER_GONE = (
    OSError,  # refused, reset, unreachable, timed out
    asyncpg.PostgresConnectionError,  # class 08: the connection failed or does not exist
    asyncpg.CannotConnectNowError,  # starting up or shutting down
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
)


def connection_lost(exc: BaseException) -> bool:
    """Whether ``exc`` says the database server cannot be reached or dropped the connection (an outage), as
    opposed to a failing statement, a locked or missing SQLite file, or a busy pool."""
    for _ in range(8):  # the driver's error, SQLAlchemy's adapter of it, SQLAlchemy's wrapper
        if isinstance(exc, DBAPIError) and exc.connection_invalidated:
            return True
        if isinstance(exc, _SERVER_GONE) and not (isinstance(exc, OSError) and exc.filename is not None):
            return True
        following = exc.orig if isinstance(exc, DBAPIError) else exc.__cause__
        if following is None:
            return False
        exc = following
    return False


def _chain(exc: BaseException) -> list[BaseException]:
    """``exc``, and what it wraps: SQLAlchemy's wrapper, its adapter of the driver's error, the driver's error."""
    links = [exc]
    for _ in range(8):
        following = exc.orig if isinstance(exc, DBAPIError) else exc.__cause__
        if following is None or following in links:
            break
        links.append(following)
        exc = following
    return links


# PostgreSQL refusing a new connection although it runs: too many connections or another resource exhausted (53),
# starting up or shutting down (57P03, 57P01, 57P02), the connection failing (08).
_REFUSED_STATES = ("53", "57P01", "57P02", "57P03", "08")


def _refused_reason(exc: BaseException) -> str | None:
    for link in _chain(exc):
        state = getattr(link, "sqlstate", None)
        if isinstance(state, str) and state.startswith(_REFUSED_STATES):
            text = str(link).strip().splitlines()
            return f"PostgreSQL refused: {text[0]}" if text else f"PostgreSQL refused ({state})"
    return None


# SQLite's "database is locked" and "database table is locked" (primary result codes, extended ones below).
_SQLITE_BUSY_CODES = (5, 6)
_PG_LOCK_NOT_AVAILABLE = "55P03"


def busy_reason(exc: BaseException) -> str | None:
    """What ``exc`` gave up waiting for, if it says a statement waited its --database-lock-timeout for a lock
    another transaction holds, or for a free pooled connection: the database is up, and busy."""
    for link in _chain(exc):
        if isinstance(link, PoolTimeout):
            return "no pooled connection came free in time"
        if isinstance(link, sqlite3.OperationalError) and (getattr(link, "sqlite_errorcode", 0) & 0xFF) in (
            _SQLITE_BUSY_CODES
        ):
            return "another process holds SQLite's write lock"
        if getattr(link, "sqlstate", None) == _PG_LOCK_NOT_AVAILABLE:
            return "another transaction holds a lock this request needs"
    return None


def default_database_url(data_dir: Path) -> str:
    return f"sqlite+aiosqlite:///{(Path(data_dir) / 'kms.db').resolve()}"


def normalize_database_url(url: str) -> str:
    """Accept plain ``postgresql://`` / ``sqlite:///`` URLs and pick the async drivers."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise ConfigError("invalid database URL") from None
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        parsed = parsed.set(drivername="sqlite+aiosqlite")
    elif backend in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+asyncpg")
    else:
        raise ConfigError(f"unsupported database {backend!r}: use sqlite or postgresql")
    return parsed.render_as_string(hide_password=False)


def create_engine(url: str, create: bool = True, lock_timeout: float = DEFAULT_LOCK_TIMEOUT) -> AsyncEngine:
    """An engine for ``url``. ``create=False`` refuses a SQLite file that does not exist yet (commands
    that only read must not leave an empty database behind a mistyped path). ``lock_timeout``: seconds a
    statement waits for a lock, and a request for a pooled connection (then ``busy_reason``)."""
    url = normalize_database_url(url)
    lock_timeout_ms = max(1, round(lock_timeout * 1000))
    if url.startswith("sqlite"):
        path = make_url(url).database
        if path and path != ":memory:":
            if create:
                _create_private_file(Path(path))
            elif not Path(path).exists():
                raise ConfigError(f"no database at {path}: check --data-dir / --database-url")
        # hide_parameters: a failed statement's error (and so a log line) never shows its values, which may
        # be sealed key material or token HMACs.
        # An in-memory database has one connection (SQLAlchemy's StaticPool), never waited for.
        pooled = {"pool_timeout": lock_timeout} if path and path != ":memory:" else {}
        engine = create_async_engine(url, connect_args={"timeout": lock_timeout}, hide_parameters=True, **pooled)
        _configure_sqlite(engine, lock_timeout_ms)
    else:
        engine = create_async_engine(
            url,
            pool_size=10,
            max_overflow=10,
            pool_pre_ping=True,
            pool_timeout=lock_timeout,
            hide_parameters=True,
        )
        _configure_postgresql(engine, lock_timeout_ms)
    return engine


def _create_private_file(path: Path) -> None:
    """Create the SQLite file readable by its owner only (SQLite's -wal/-shm files copy its mode). A path
    that cannot be written is a ConfigError naming it (the operator's --data-dir or --database-url)."""
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except FileExistsError as exc:
        if exc.filename is not None and Path(exc.filename) != path:  # a file where a directory should be
            raise ConfigError(f"cannot create the SQLite database {path}: {exc.filename} is not a directory") from None
    except OSError as exc:
        where = f" ({exc.filename})" if exc.filename is not None and Path(exc.filename) != path else ""
        raise ConfigError(f"cannot create the SQLite database {path}: {exc.strerror or exc}{where}") from None


def _configure_postgresql(engine: AsyncEngine, lock_timeout_ms: int) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection, _record) -> None:
        # A lock wait (a row another node's transaction holds) ends with LockNotAvailable, never hangs. Set
        # with SET, not as a startup parameter: poolers such as PgBouncer refuse unknown startup parameters.
        dbapi_connection.run_async(lambda connection: connection.execute(f"SET lock_timeout = {lock_timeout_ms}"))


def _configure_sqlite(engine: AsyncEngine, busy_timeout_ms: int) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection, _record) -> None:
        # Let SQLAlchemy, not the driver, decide when transactions begin (see _on_begin).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute(f"PRAGMA busy_timeout={busy_timeout_ms}")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn) -> None:
        # Writers take the write lock up front: a deferred transaction that reads then writes can fail
        # with SQLITE_BUSY despite busy_timeout when another process writes in between. Readers stay
        # deferred: under WAL they never wait for a writer, nor make each other wait.
        immediate = conn.get_execution_options().get(WRITE_OPTION)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


_CHANGES = "kms_changes"


class Database:
    """Sessions for reads and for write transactions (the latter serialise with other writers).

    A writer records what it changes with ``changed``; after the commit, ``writing`` hands the changes to
    ``on_commit`` (the service's invalidator), before the caller sees the result. ``gate`` runs before every
    session and may refuse it (a serving node during a database outage raises at once)."""

    def __init__(
        self,
        engine: AsyncEngine,
        on_commit: Callable[[list[Any]], None] | None = None,
        before_commit: Callable[[Any, list[Any]], Awaitable[None]] | None = None,
        gate: Callable[[], None] | None = None,
    ) -> None:
        self.engine = engine
        self._readers = async_sessionmaker(engine, expire_on_commit=False)
        self._writers = async_sessionmaker(engine.execution_options(**{WRITE_OPTION: True}), expire_on_commit=False)
        self._on_commit = on_commit
        self._before_commit = before_commit
        self._gate = gate

    def reading(self) -> AsyncSession:
        if self._gate is not None:
            self._gate()
        return self._readers()

    @asynccontextmanager
    async def writing(self) -> AsyncIterator[AsyncSession]:
        """One transaction, committed on exit (rolled back on error)."""
        if self._gate is not None:
            self._gate()
        async with self._writers() as session:
            async with session.begin():
                yield session
                changes = session.info.get(_CHANGES, [])
                if changes and self._before_commit is not None:
                    await self._before_commit(await session.connection(), changes)
            changes = session.info.pop(_CHANGES, [])
        if changes and self._on_commit is not None:
            self._on_commit(changes)

    @staticmethod
    def changed(session: AsyncSession, *changes: Any) -> None:
        """Record what this transaction changes; delivered to the caches once it commits."""
        session.info.setdefault(_CHANGES, []).extend(changes)
