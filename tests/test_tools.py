"""A test whose outside tool is missing says which tool: a skip on a developer's machine, a failure under CI."""

from __future__ import annotations

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
