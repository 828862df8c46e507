"""Tools outside Python that some tests drive (nginx, wrk, valgrind, chromium, ...). On a developer's machine
a test whose tool is missing is skipped, naming the tool and its Debian package; under CI (``CI`` set, as
.ci/run's callers set it) the same test fails instead, so a run that skipped something never passes there.
Any other skip fails under CI too: conftest.py registers ``pytest_runtest_makereport`` below."""

from __future__ import annotations

import os
import shutil

import pytest


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() not in ("", "0", "false", "no")


def missing(message: str) -> None:
    """Skip with ``message`` on a developer's machine; fail with it under CI."""
    if in_ci():
        pytest.fail(f"{message} (CI: a missing tool is a failure)")
    pytest.skip(message)


def find_tool(name: str, package: str | None = None, *also: str) -> str:
    """The path of ``name`` (on PATH or at one of ``also``), or a skip/failure naming its Debian package."""
    found = shutil.which(name) or next((path for path in also if os.access(path, os.X_OK)), None)
    if found is None:
        missing(f"{name} is not installed (Debian's package: {package or name}; .ci/run installs it)")
    return found


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):
    """Under CI a skipped test is reported failed, with the skip's reason (an expected failure stays one)."""
    outcome = yield
    report = outcome.get_result()
    if report.skipped and in_ci() and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"skipped, and under CI a skip is a failure: {reason.removeprefix('Skipped: ')}"
