"""Shared fixtures: database-backed tests run on SQLite and on PostgreSQL, against a real server; the files
of the HTTP surface (marked ``sqlite_only``) on SQLite alone.

PostgreSQL comes from KMS_TEST_POSTGRES_URL (default: the local server's ``test`` database); each test
gets a fresh database of its own, copied from one migrated once per test process. If PostgreSQL is
unreachable the tests fail, never skip.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import shutil
import threading
import uuid
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import hvac
import pytest
from aiohttp import web
from tools import pytest_runtest_makereport  # noqa: F401 (a hook: under CI a skip is a failure)

from kms_service.config import ServiceConfig, load_service_config
from kms_service.seal import MasterKey
from kms_service.service import KMS
from kms_service.settings import Settings
from kms_service.storage import migrate
from kms_service.storage.database import create_engine
from kms_service.web.app import create_app
from kms_service.web.routing import KMS_KEY
from kms_service.web.server import AppRunner

ROOT = Path(__file__).resolve().parents[1]
SEED_CONFIG = ROOT / "deploy" / "services.example.yaml"
TEST_CONFIG = ROOT / "tests" / "data" / "services.yaml"
POSTGRES_URL = os.environ.get("KMS_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")


def _pg_admin_url() -> str:
    return POSTGRES_URL


async def _pg_execute(sql: str) -> None:
    conn = await asyncpg.connect(_pg_admin_url(), timeout=10)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def _pg_url(name: str) -> str:
    base, _, _ = POSTGRES_URL.rpartition("/")
    return f"{base}/{name}"


# In every database name: two runs (or two xdist workers, each its own process) never meet.
RUN_ID = uuid.uuid4().hex[:10]
_database_names = itertools.count()


def _unique_name(kind: str) -> str:
    return f"kms_{kind}_{RUN_ID}_{next(_database_names)}"


async def _migrate(url: str) -> None:
    engine = create_engine(url)
    try:
        await migrate.upgrade(engine)
    finally:
        await engine.dispose()


class DatabaseTemplates:
    """A database per backend migrated once per test process, copied for each test: a SQLite file copy or
    PostgreSQL's ``CREATE DATABASE ... TEMPLATE`` instead of running every migration again."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.sqlite_file: Path | None = None
        self.postgresql_name: str | None = None

    def sqlite(self, target: Path) -> None:
        if self.sqlite_file is None:
            path = self.directory / "template.db"
            asyncio.run(_migrate(f"sqlite:///{path}"))
            # Closing the last connection folded the write-ahead log into the file: the file is the database.
            assert not path.with_name(path.name + "-wal").exists()
            self.sqlite_file = path
        target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        shutil.copyfile(self.sqlite_file, target)
        target.chmod(0o600)

    def postgresql(self, name: str) -> None:
        if self.postgresql_name is None:
            template = _unique_name("template")
            _pg_create(template)
            asyncio.run(_migrate(_pg_url(template)))
            # A copy needs the template without sessions: none may start any more (autovacuum's neither).
            asyncio.run(_pg_execute(f'ALTER DATABASE "{template}" WITH ALLOW_CONNECTIONS false'))
            self.postgresql_name = template
        _pg_create(name, template=self.postgresql_name)

    def drop(self) -> None:
        if self.postgresql_name is not None:
            asyncio.run(_pg_execute(f'DROP DATABASE IF EXISTS "{self.postgresql_name}" WITH (FORCE)'))


def _pg_create(name: str, template: str | None = None) -> None:
    sql = f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else "")
    try:
        asyncio.run(_pg_execute(sql))
    except (OSError, asyncpg.PostgresError) as exc:
        pytest.fail(f"PostgreSQL is required at {POSTGRES_URL} (start it; see .ci/run): {exc}")


@pytest.fixture(scope="session")
def database_templates(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DatabaseTemplates]:
    templates = DatabaseTemplates(tmp_path_factory.mktemp("templates"))
    yield templates
    templates.drop()


DATABASES = ("sqlite", "postgresql")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Every test using ``database_url`` runs on both databases, but a test marked ``sqlite_only`` (the HTTP
    surface, where the database plays no part) runs on SQLite alone."""
    chosen = any("database_url" in str(m.args[0]) for m in metafunc.definition.iter_markers("parametrize"))
    if "database_url" in metafunc.fixturenames and not chosen:
        sqlite_only = metafunc.definition.get_closest_marker("sqlite_only") is not None
        metafunc.parametrize("database_url", DATABASES[:1] if sqlite_only else DATABASES, indirect=True)


@pytest.fixture
def database_url(request, tmp_path: Path, database_templates: DatabaseTemplates) -> Iterator[str]:
    """A database at the newest schema revision with nothing in it: a SQLite file, or a new PostgreSQL
    database dropped afterwards. Marked ``empty_database``: a database never written to (a SQLite path with
    no file yet), for tests of creating and migrating one."""
    empty = request.node.get_closest_marker("empty_database") is not None
    if request.param == "sqlite":
        path = tmp_path / "kms.db"
        if not empty:
            database_templates.sqlite(path)
        yield f"sqlite:///{path}"
        return
    name = _unique_name("test")
    if empty:
        _pg_create(name)
    else:
        database_templates.postgresql(name)
    yield _pg_url(name)
    asyncio.run(_pg_execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    path = tmp_path / "data"
    path.mkdir()
    return path


class ServerThread:
    """The real app on a real socket, in its own thread and event loop, so synchronous clients (hvac,
    requests, curl) can talk to it from the test."""

    def __init__(
        self,
        database_url: str,
        data_dir: Path,
        config: ServiceConfig,
        *,
        master_key: MasterKey | None = None,
        uvloop: bool = False,
        **settings: Any,
    ) -> None:
        """``uvloop``: serve on uvloop's event loop, as ``kms-service serve`` does (its callbacks run in
        another order than asyncio's). ``settings``: any other ``Settings`` field (cache_ttl, reap_interval,
        max_batch_items, ...)."""
        self.database_url = database_url
        self.data_dir = data_dir
        self.config = config
        self.master_key = master_key
        self.overrides = settings
        if uvloop:
            import uvloop as _uvloop

            self.loop = _uvloop.new_event_loop()
        else:
            self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.kms: KMS
        self.url = ""

    def start(self) -> ServerThread:
        self._thread.start()
        self.call(self._start())
        return self

    async def _start(self) -> None:
        self.settings = Settings(
            data_dir=self.data_dir,
            database_url=self.database_url,
            service=self.config,
            master_key=self.master_key,
            **self.overrides,
        )
        # The same start as `kms-service serve`: create_app opens the service in its cleanup_ctx.
        self._runner = AppRunner(create_app(self.settings), access_log=None)
        await self._runner.setup()
        self.kms = self._runner.app[KMS_KEY]
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"

    def call(self, coro: Coroutine[Any, Any, Any], timeout: float = 60) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def endpoint_token(self, endpoint: str) -> str:
        return self.call(self.kms.tokens.endpoint_token(endpoint))[0]

    def root_token(self) -> str:
        """A new operator token with the root policy (valid one hour)."""
        from datetime import timedelta

        return self.call(self.kms.tokens.create(["root"], timedelta(hours=1)))[0]

    def client(self, token: str | None) -> hvac.Client:
        return hvac.Client(url=self.url, token=token)

    def stop(self) -> None:
        """Stop the server (a second call, e.g. the fixture's after a test's own, does nothing)."""
        if self.loop.is_closed():
            return

        async def _stop() -> None:
            await self._runner.cleanup()  # closes the service too

        self.call(_stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()


@pytest.fixture
def start_server(database_url: str, data_dir: Path) -> Iterator[Callable[..., ServerThread]]:
    servers: list[ServerThread] = []

    def start(config_path: Path = TEST_CONFIG, **kwargs: Any) -> ServerThread:
        server = ServerThread(database_url, data_dir, load_service_config(config_path), **kwargs).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture(scope="module")
def shared_server(
    tmp_path_factory: pytest.TempPathFactory, database_templates: DatabaseTemplates
) -> Iterator[ServerThread]:
    """One server on the tests' config for a whole module, on SQLite: for the HTTP surface, where each test
    only reads or makes keys, tokens and policies of its own names."""
    directory = tmp_path_factory.mktemp("shared-server")
    database_templates.sqlite(directory / "kms.db")
    data_dir = directory / "data"
    data_dir.mkdir()
    server = ServerThread(f"sqlite:///{directory / 'kms.db'}", data_dir, load_service_config(TEST_CONFIG)).start()
    yield server
    server.stop()


@pytest.fixture
def server(start_server) -> ServerThread:
    """The server on the tests' config (every policy on its own endpoint)."""
    return start_server()


@pytest.fixture
def seed_server(start_server) -> ServerThread:
    """The server on the seed's own example config."""
    return start_server(SEED_CONFIG)
