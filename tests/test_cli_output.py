"""How the commands print lists and records (``cli_output.py``): the layout itself at several widths, then the
real command in a real terminal (tmux at 80 columns), where an accessor read off the screen is pasted into
``token revoke``, and through a pipe (tab-separated, no padding)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from processes import cli_env, run_cli

from kms_service.cli_output import Column, layout

pytestmark = pytest.mark.sqlite_only  # the layout, not the database

ACCESSOR = "683d467e32ffdf36301b98e7"
LONG_POLICIES = ", ".join(f"{kind}:payments-eu-west-1" for kind in ("admin", "encrypt", "decrypt", "rewrap"))
COLUMNS = (
    Column("accessor", "accessor", identifier=True),
    Column("name", "name"),
    Column("policies", "policies"),
    Column("expires (UTC)", "expires", optional=True),
    Column("tokens", "count"),
)
ROWS = [
    {"accessor": ACCESSOR, "name": "deploy", "policies": LONG_POLICIES, "expires": "2026-12-07 15:00", "count": 3},
    {"accessor": "0" * 24, "name": "a", "policies": None, "expires": None, "count": True},
]


def test_a_pipe_gets_every_column_tab_separated_without_padding():
    lines, hidden = layout(COLUMNS, ROWS, None)
    assert hidden == []
    assert lines == [
        "accessor\tname\tpolicies\texpires (UTC)\ttokens",
        f"{ACCESSOR}\tdeploy\t{LONG_POLICIES}\t2026-12-07 15:00\t3",
        f"{'0' * 24}\ta\t-\t-\ttrue",  # nothing as -, booleans as the API gives them
    ]


@pytest.mark.parametrize("width", [200, 120, 80, 60, 40, 30])
def test_a_terminal_table_fits_and_never_splits_an_identifier(width):
    lines, hidden = layout(COLUMNS, ROWS, width)
    assert all(len(line) <= width for line in lines), lines
    assert all(line == line.rstrip() for line in lines)  # no trailing spaces
    for row in ROWS:  # each accessor whole, at the start of a line
        assert any(line.startswith(row["accessor"] + "  ") or line == row["accessor"] for line in lines)
    if width >= 200:
        assert hidden == [] and "2026-12-07 15:00" in "\n".join(lines)
    else:
        assert "expires (UTC)" in hidden  # optional columns go first, so rows stay short
    if width >= 80:  # the policies cell wraps between its words
        assert all(any(policy in line for line in lines) for policy in LONG_POLICIES.split(", ")), lines
    if width <= 30:  # too narrow for more than the identifiers: the others are dropped, not cut to nothing
        assert hidden == ["expires (UTC)", "tokens", "policies", "name"] and lines[0] == "accessor"


def test_wide_keeps_every_column_and_the_identifiers_whole():
    lines, hidden = layout(COLUMNS, ROWS, 40, wide=True)
    assert hidden == [] and lines[0].split()[:2] == ["accessor", "name"]
    assert any(line.startswith(ACCESSOR) for line in lines)
    assert "tokens" in lines[0]


# -- the real command in a real terminal ------------------------------------------------------------------


class Tmux:
    """A tmux server of this test's own (its own socket), one window of ``width`` x 40 running bash."""

    def __init__(self, width: int, env: dict[str, str]) -> None:
        self.socket = f"kms-test-{uuid.uuid4().hex[:12]}"
        self.env = env
        self._tmux("new-session", "-d", "-x", str(width), "-y", "40", "-s", "t", "bash --norc --noprofile")
        self.marks = 0

    def _tmux(self, *args: str) -> str:
        result = subprocess.run(
            ["tmux", "-L", self.socket, "-f", "/dev/null", *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
        return result.stdout

    def run(self, command: str) -> list[str]:
        """Type ``command`` and Enter; once it has finished, the screen's lines as shown (wrapped lines split)."""
        self.marks += 1
        mark = f"=={self.marks}-done=="
        # The shell prints the mark once the command returns; the typed line shows $((...)), never the mark.
        self._tmux("send-keys", "-t", "t", f"clear; {command}; echo ==$(({self.marks}))-done==", "Enter")
        return self.screen_once(mark)

    def screen_once(self, mark: str) -> list[str]:
        deadline = time.monotonic() + 60
        while True:
            screen = self._tmux("capture-pane", "-p", "-t", "t").splitlines()
            if mark in screen:
                return screen[: screen.index(mark)]
            assert time.monotonic() < deadline, "\n".join(screen)
            time.sleep(0.05)

    def paste(self, text: str) -> None:
        self._tmux("set-buffer", text)
        self._tmux("paste-buffer", "-t", "t")

    def type(self, text: str) -> None:
        self._tmux("send-keys", "-t", "t", "-l", text)

    def close(self) -> None:
        subprocess.run(["tmux", "-L", self.socket, "kill-server"], capture_output=True, timeout=30)


@pytest.fixture
def tmux():
    if shutil.which("tmux") is None:
        if os.environ.get("CI"):
            pytest.fail("the terminal tests need tmux")
        pytest.skip("the terminal tests need tmux")
    made = []

    def start(width: int, env: dict[str, str]) -> Tmux:
        made.append(Tmux(width, env))
        return made[-1]

    yield start
    for terminal in made:
        terminal.close()


def test_in_an_80_column_terminal_an_accessor_on_the_screen_revokes_its_token(database_url, data_dir, tmux):
    env = cli_env(database_url, data_dir)
    run_cli(["migrate"], env)
    names = ["payments-eu-west-1", "customer-records-archive-2026-signing"]
    run_cli(["keys", "create", names[0]], env)
    run_cli(["keys", "create", names[1], "--type", "ed25519", "--mount", "transit"], env)
    policies = [arg for kind in ("admin", "encrypt", "decrypt", "rewrap") for arg in ("--policy", f"{kind}:{names[0]}")]
    run_cli(["token", "create", *policies, "--display-name", "victim", "--ttl", "1h"], env)
    run_cli(["token", "create", "--policy", f"sign:{names[1]}", "--display-name", "other"], env)
    tokens = json.loads(run_cli(["token", "list", "--json"], env).stdout)
    victim = next(t["accessor"] for t in tokens if t["display_name"] == "victim")

    # The installed command, as an operator runs it, in a terminal 80 columns wide.
    bin_dir = Path(sys.executable).parent
    shell_env = {**env, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}", "TERM": "xterm"}
    terminal = tmux(80, shell_env)

    screen = terminal.run("kms-service token list")
    assert screen[0].startswith("accessor") and all(len(line) <= 80 for line in screen)
    on_screen = re.findall(r"\b[0-9a-f]{24}\b", "\n".join(screen))
    assert sorted(on_screen) == sorted(t["accessor"] for t in tokens), screen  # every accessor whole on a line
    assert any("victim" in line for line in screen) and f"encrypt:{names[0]}" in "\n".join(screen)

    keys = terminal.run("kms-service keys list")
    for name in names:  # each name whole, on the same line as its mount
        assert any(re.search(rf"\btransit/\s+{re.escape(name)}(\s|$)", line) for line in keys), keys

    # Copy the accessor off the screen (the line that names the token) and paste it into token revoke.
    line = next(line for line in screen if "victim" in line)
    copied = re.search(r"\b[0-9a-f]{24}\b", line).group()
    assert copied == victim
    terminal.type("kms-service token revoke ")
    terminal.paste(copied)
    terminal.type("; echo ==$((99))-done==")
    terminal._tmux("send-keys", "-t", "t", "Enter")
    assert "revoked" in terminal.screen_once("==99-done==")
    assert victim not in [t["accessor"] for t in json.loads(run_cli(["token", "list", "--json"], env).stdout)]


def test_through_a_pipe_lines_are_tab_separated_and_unpadded(database_url, data_dir):
    env = cli_env(database_url, data_dir)
    run_cli(["migrate"], env)
    run_cli(["keys", "create", "payments"], env)
    run_cli(["token", "create", "--policy", "encrypt:payments", "--display-name", "app"], env)
    for command in (["token", "list"], ["keys", "list"], ["keys", "show", "payments"], ["inspect"]):
        out = run_cli(command, env).stdout
        assert all(line == line.rstrip() and "  " not in line for line in out.splitlines()), out
    header, row = run_cli(["token", "list"], env).stdout.splitlines()
    assert header.split("\t") == ["accessor", "name", "endpoint", "policies", "expires (UTC)", "in"]
    cells = row.split("\t")
    assert cells[1:3] == ["app", "-"] and "encrypt:payments" in cells[3].split(", ")
