"""`make run` takes the address from the command line (beside a Vault that holds 8200) and keeps its defaults."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from tools import find_tool

ROOT = Path(__file__).resolve().parents[1]


def _run_recipe(*assignments: str, env: dict[str, str] | None = None) -> str:
    """The serve line `make run` would run (make -n prints the recipe and runs nothing)."""
    find_tool("make")
    printed = subprocess.run(
        ["make", "--no-print-directory", "-n", "-C", str(ROOT), "run", *assignments],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
        env=env,
    ).stdout
    return next(line for line in printed.splitlines() if "kms-service serve" in line)


def test_make_run_listens_on_127_0_0_1_8200_by_default():
    assert _run_recipe().endswith("--host 127.0.0.1 --port 8200")


def test_make_run_takes_port_and_host():
    assert _run_recipe("PORT=8300", "HOST=0.0.0.0").endswith("--host 0.0.0.0 --port 8300")


def test_make_run_ignores_port_and_host_in_the_environment():
    """Other tools export PORT or HOST; only the command line moves `make run`."""
    env = {**os.environ, "PORT": "3000", "HOST": "example-host"}
    assert _run_recipe(env=env).endswith("--host 127.0.0.1 --port 8200")
    assert _run_recipe("PORT=8300", env=env).endswith("--host 127.0.0.1 --port 8300")
