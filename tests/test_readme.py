"""The README followed literally: its shell and Python examples, in order, against a fresh ``make run``.

Every fenced block tagged ``sh``, ``bash``, ``shell`` or ``python`` runs, unless the line right before it is
``<!-- not run: REASON -->`` (visible in the README's source; the list is kept short and checked below).
Then the blocks of docs/ that the line ``<!-- run: ... -->`` stands before (the examples that moved out of the
README), as installed: ``kms-service`` on PATH.
Blocks tagged ``text``, ``yaml``, ``json``, ``sql`` or nothing are shown, not run (``sql``: tests/test_views.py
runs those queries); any other tag fails the test, so a new example cannot slip past it.

The server is the Makefile's own ``run`` recipe, read from the Makefile, started in a fresh directory that
holds ``.venv`` (this interpreter's environment) and ``deploy/`` (the checkout's) and an empty ``./data``.
Two rewrites, and only these: the README's ``127.0.0.1:8200`` becomes a free port chosen at run time (in the
recipe and in every block), and on the PostgreSQL run ``KMS_DATABASE_URL`` is set, as an operator with
PostgreSQL sets it. Shell blocks run one after the other as ``bash -euo pipefail``; exported variables carry
from one block to the next (as in one terminal), and ``curl`` fails on an HTTP error status.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from processes import free_port

# Long: `make test` runs the slow group after the rest.
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
RUN = {"sh", "bash", "shell", "python"}
SHOWN = {"", "text", "yaml", "json", "sql"}
NOT_RUN = re.compile(r"^<!-- not run: (?P<reason>\S.*\S) -->$")
RUN_IN_DOCS = re.compile(r"^<!-- run: tests/test_readme\.py runs this block after the README's -->$")
MAX_NOT_RUN = 3

# What a block's output must show, beyond exiting 0 (keyed by a line the block contains).
EXPECTED = {
    "transit/decrypt/orders": "my secret",
    "decrypt_data(": "hello from hvac",
    "transit/sign/vault-sign/sha2-512": '"signature":"vault-kms:v1:',
    ".venv/bin/kms-service token revoke": "revoked",
    ".venv/bin/kms-service keys rotate vault-sign": "rotated key vault-sign in transit/ to version 2",
    "kms-service token revoke": "revoked",
    "sys/metrics?format=prometheus": "kms_http_requests_total{",
}

PREAMBLE = """set -euo pipefail
source "$README_STATE"
# An HTTP error status fails the block (the README's curl lines would print it and go on).
curl() { command curl --silent --show-error --fail-with-body "$@"; }
"""
TRAILER = '\nexport -p > "$README_STATE"\n'


@dataclass
class Block:
    line: int
    lang: str
    text: str
    not_run: str | None
    page: str = "README.md"


def docs_blocks() -> list[Block]:
    return [block for page in sorted((ROOT / "docs").glob("*.md")) for block in readme_blocks(page)]


def readme_blocks(page: Path = README) -> list[Block]:
    blocks: list[Block] = []
    lines = page.read_text(encoding="utf-8").splitlines()
    index = 0
    while index < len(lines):
        fence = re.match(r"^```(\S*)\s*$", lines[index])
        if fence is None:
            index += 1
            continue
        start = index
        end = lines.index("```", start + 1)
        marker = NOT_RUN.match(lines[start - 1]) if start > 0 else None
        text = "\n".join(lines[start + 1 : end]) + "\n"
        if page != README:  # docs/: only the blocks marked to run; the line names the page
            if start > 0 and RUN_IN_DOCS.match(lines[start - 1]):
                blocks.append(Block(start + 1, fence.group(1), text, None, page.relative_to(ROOT).as_posix()))
            index = end + 1
            continue
        blocks.append(Block(start + 1, fence.group(1), text, marker.group("reason") if marker else None))
        index = end + 1
    return blocks


def make_run_command(port: int) -> list[str]:
    """The Makefile's ``run`` recipe, with $(BIN) expanded and the port rewritten."""
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8").splitlines()
    recipe = makefile[makefile.index(next(line for line in makefile if line.startswith("run:"))) + 1]
    assert recipe.startswith("\t$(BIN)/kms-service serve "), recipe
    assert "--host $(HOST) --port $(PORT)" in recipe and "--data-dir ./data" in recipe, recipe
    # The defaults the README's 127.0.0.1:8200 stands for.
    assert "HOST   := 127.0.0.1" in makefile and "PORT   := 8200" in makefile
    expanded = recipe.strip().replace("$(BIN)", ".venv/bin").replace("$(HOST)", "127.0.0.1")
    return shlex.split(expanded.replace("$(PORT)", str(port)))


def test_readme_blocks_are_run_or_marked() -> None:
    blocks = readme_blocks()
    assert all(b.lang in RUN | SHOWN for b in blocks), [(b.line, b.lang) for b in blocks if b.lang not in RUN | SHOWN]
    not_run = [b for b in blocks if b.not_run is not None]
    assert all(b.lang in RUN for b in not_run), "a not-run marker stands before a block that would not run anyway"
    assert len(not_run) <= MAX_NOT_RUN, [(b.line, b.not_run) for b in not_run]
    assert sum(b.lang == "python" for b in blocks if b.not_run is None) >= 1
    # The README starts with the two commands.
    assert "make run" in blocks[0].text and "make test" in blocks[0].text
    # docs/ blocks marked to run are runnable ones.
    in_docs = docs_blocks()
    assert len(in_docs) >= 3 and all(b.lang in RUN for b in in_docs), [(b.page, b.line, b.lang) for b in in_docs]
    # Every expectation above still finds its block.
    runnable = [b.text for b in blocks + in_docs if b.lang in RUN and b.not_run is None]
    assert all(any(marker in text for text in runnable) for marker in EXPECTED)


def _start(command: list[str], cwd: Path, env: dict[str, str], port: int, log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        proc = subprocess.Popen(command, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while True:
        assert proc.poll() is None, f"make run's server exited:\n{log.read_text()}"
        try:
            if requests.get(f"http://127.0.0.1:{port}/v1/sys/health", timeout=1).status_code == 200:
                return proc
        except requests.ConnectionError:
            pass
        assert time.monotonic() < deadline, f"make run's server did not come up in 60 s:\n{log.read_text()}"
        time.sleep(0.1)


def test_readme_followed_literally(database_url: str, tmp_path: Path) -> None:
    started = time.monotonic()
    work = tmp_path / "checkout"
    work.mkdir()
    (work / ".venv").symlink_to(Path(sys.prefix))
    (work / "deploy").symlink_to(ROOT / "deploy")
    assert (work / ".venv" / "bin" / "kms-service").exists(), "run the tests with the checkout's .venv"
    state = tmp_path / "state.sh"
    state.write_text("")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KMS_", "VAULT_", "BAO_"))}
    env.update(README_STATE=str(state), HOME=str(tmp_path))
    if not database_url.startswith("sqlite"):
        env["KMS_DATABASE_URL"] = database_url  # the SQLite run keeps make run's default: ./data/kms.db

    port = free_port()
    log = tmp_path / "serve.log"
    server = _start(make_run_command(port), work, env, port, log)
    try:
        for block in readme_blocks() + docs_blocks():
            if block.lang not in RUN or block.not_run is not None:
                continue
            text = block.text.replace("127.0.0.1:8200", f"127.0.0.1:{port}")
            if block.lang == "python":
                program = tmp_path / f"readme_{block.line}.py"
                program.write_text(text)
                text = f".venv/bin/python {shlex.quote(str(program))}\n"
            if block.page != "README.md":  # written as installed: the checkout's kms-service on PATH
                text = 'export PATH="$PWD/.venv/bin:$PATH"\n' + text
            result = subprocess.run(
                ["bash", "-c", PREAMBLE + text + TRAILER],
                cwd=work,
                env=env,
                capture_output=True,
                text=True,
                timeout=60,
            )
            where = f"{block.page} line {block.line} ({block.lang})"
            assert result.returncode == 0, f"{where} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
            for marker, expected in EXPECTED.items():
                if marker in block.text:
                    assert expected in result.stdout, f"{where}: no {expected!r} in its output:\n{result.stdout}"
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    output = log.read_text()
    assert server.returncode == 0, output
    # make run's first start says where the master key is and that it must be backed up, and how to go on.
    assert "master.key" in output and "Back it up" in output, output
    assert "token create --policy root" in output, output
    print(f"README followed in {time.monotonic() - started:.1f} s")
