"""A test whose outside tool is missing says which tool: a skip on a developer's machine, a failure under CI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from tools import find_tool

ABSENT = "kms-no-such-tool"


def test_a_missing_tool_skips_naming_it_and_its_package(monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match=rf"{ABSENT} is not installed \(Debian's package: pkg-x;"):
        find_tool(ABSENT, "pkg-x")


@pytest.mark.parametrize("value", ["true", "1", "yes"])
def test_under_ci_a_missing_tool_is_a_failure(monkeypatch, value):
    monkeypatch.setenv("CI", value)
    with pytest.raises(pytest.fail.Exception, match=rf"{ABSENT} is not installed .*CI: a missing tool is a failure"):
        find_tool(ABSENT)


def test_a_tool_outside_path_is_found_where_named(monkeypatch, tmp_path):
    tool = tmp_path / "sbin-tool"
    tool.write_text("#!/bin/sh\n")
    tool.chmod(0o755)
    monkeypatch.setenv("PATH", "/nonexistent")
    assert find_tool("sbin-tool", None, str(tool)) == str(tool)


def test_under_ci_any_skip_fails_the_run(tmp_path):
    """conftest.py's hook, in a pytest run of its own: a skip passes on a developer's machine and fails under
    CI; an expected failure (xfail) stays one either way."""
    (tmp_path / "conftest.py").write_text("from tools import pytest_runtest_makereport  # noqa: F401\n")
    (tmp_path / "test_sample.py").write_text(
        "import pytest\n\n\ndef test_skipped():\n    pytest.skip('no frobnicator here')\n\n\n"
        "@pytest.mark.xfail(strict=True)\ndef test_expected_to_fail():\n    assert False\n"
    )
    tests = str(Path(__file__).resolve().parent)
    base = {k: v for k, v in os.environ.items() if k not in ("CI", "PYTEST_ADDOPTS", "PYTEST_XDIST_WORKER")}
    base["PYTHONPATH"] = os.pathsep.join(filter(None, [tests, os.environ.get("PYTHONPATH")]))
    for ci, code, summary in ((None, 0, "1 skipped, 1 xfailed"), ("true", 1, "1 failed, 1 xfailed")):
        env = {**base, "CI": ci} if ci else base
        run = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert run.returncode == code and summary in run.stdout, run.stdout
    assert "under CI a skip is a failure: no frobnicator here" in run.stdout
