"""A command that does not serve answers at once: ``--version`` and ``--help`` load click and the command
modules alone, never the service, the database libraries or the crypto libraries (those are imported inside
the commands that use them). Measured against this machine's own start of Python and of click, taken in the
same rounds so a busy machine slows both alike."""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time

from kms_service import cli_master_key
from kms_service.service import master_keys

ROUNDS = 5
# What --version and --help may add to importing click (the command modules, the settings table, the help):
# this, or twice what importing click itself costs when a busy machine makes that slower.
BUDGET = 0.35
READ_BUDGET = 0.5
HEAVY = ("sqlalchemy", "aiohttp", "alembic", "cryptography", "nacl", "asyncpg", "yaml", "rich", "kms_service.service")


def _seconds(command: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, capture_output=True, check=True, timeout=60)
    return time.perf_counter() - start


def test_version_and_help_start_within_the_budget():
    commands = {
        "python": [sys.executable, "-c", "pass"],
        "click": [sys.executable, "-c", "import click"],
        "--version": [sys.executable, "-m", "kms_service", "--version"],
        "keys --help": [sys.executable, "-m", "kms_service", "keys", "--help"],
        "--help": [sys.executable, "-m", "kms_service", "--help"],
    }
    times: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(ROUNDS):
        for name, command in commands.items():
            times[name].append(_seconds(command))
    median = {name: statistics.median(values) for name, values in times.items()}
    allowed = max(BUDGET, 2 * (median["click"] - median["python"]))
    for name in ("--version", "keys --help", "--help"):
        assert median[name] - median["click"] < allowed, median


def test_no_heavy_module_is_loaded_for_help():
    probe = (
        "import sys; from click.testing import CliRunner; from kms_service.cli import main; "
        "assert CliRunner().invoke(main, ['keys', 'create', '--help']).exit_code == 0; "
        "print('\\n'.join(sorted(sys.modules)))"
    )
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout.split()
    assert [m for m in loaded if m.startswith(HEAVY)] == []


def test_the_batch_size_shown_by_help_is_the_services():
    assert cli_master_key.DEFAULT_BATCH_SIZE == master_keys.DEFAULT_BATCH_SIZE


def test_a_command_that_only_reads_loads_the_storage_layer_alone(tmp_path):
    """keys list: the database libraries and the storage layer, never the service, Alembic, the web side or the
    crypto libraries; and it costs little more than importing the database libraries."""
    env = {**os.environ, "KMS_DATABASE_URL": f"sqlite:///{tmp_path / 'kms.db'}", "KMS_DATA_DIR": str(tmp_path)}
    env.pop("COLUMNS", None)
    subprocess.run([sys.executable, "-m", "kms_service", "migrate"], env=env, capture_output=True, check=True)
    probe = (
        "import sys\nfrom kms_service.cli import main\ntry:\n    main(['keys', 'list'])\nexcept SystemExit as exit:\n"
        "    assert not exit.code\nprint('\\n'.join(sorted(sys.modules)), file=sys.stderr)"
    )
    loaded = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True).stderr.split()
    assert "kms_service.storage.reports" in loaded
    heavy = ("kms_service.service", "alembic", "aiohttp", "cryptography", "nacl", "yaml", "rich")
    assert [m for m in loaded if m.startswith(heavy)] == []

    commands = {
        "python": [sys.executable, "-c", "pass"],
        "click": [sys.executable, "-c", "import click"],
        "database libraries": [sys.executable, "-c", "import click, sqlalchemy.ext.asyncio, aiosqlite, asyncpg"],
        "keys list": [sys.executable, "-m", "kms_service", "keys", "list"],
    }
    times: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(ROUNDS):
        for name, command in commands.items():
            start = time.perf_counter()
            subprocess.run(command, env=env, capture_output=True, check=True, timeout=60)
            times[name].append(time.perf_counter() - start)
    median = {name: statistics.median(values) for name, values in times.items()}
    # Its own work besides (the command modules, open the database, check its revision, one query, the
    # table): READ_BUDGET, or a third of what loading the database libraries takes on a busy machine.
    allowed = max(READ_BUDGET, median["database libraries"] / 3)
    assert median["keys list"] - median["database libraries"] < allowed, median
