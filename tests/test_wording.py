"""What ships speaks of the product only: no word of how the work on it was organised (sessions, stops, the
seed it started from, issue or ticket numbers, who worked on what) in the README, docs/, CHANGELOG,
ARCHITECTURE, the package's code and comments, the benchmarks, deploy/ and the build files."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TEXT_SUFFIXES = {".md", ".py", ".js", ".html", ".css", ".yaml", ".yml", ".toml", ".conf", ".service", ".ini", ""}

# Each pattern with what it stands for. Words with a product meaning are allowed in it: a cryptographic seed
# ("the seed then the public key", "its seed"), a process that stops ("clients that stop sending"), a
# database or browser session (below).
BANNED = {
    r"\b(?:this|the last|the previous|an earlier|earlier|previous|the next|next|a later|later) (?:sessions?|stop)\b": (
        "a work session or stop"
    ),
    r"\bstop['’]s\b": "a stop's work",
    r"\bthe seed\b(?! then\b| form\b| of\b| ‖)": "the seed the project started from",
    r"\bseed['’]s\b": "the seed's files",
    r"\bissues? #?\d": "an issue number (name an outside project's issue by its address)",
    r"\bissue['’]s\b|\bthe issue\b": "the issue that set the work",
    r"\bno target of\b": "the work's targets",
    r"\btickets?\b": "a ticket",
    r"\b(?:another|other) engineers?\b|\bengineers?['’]": "who worked on it",
}
# In prose (Markdown outside code spans) "session" alone is a work session; these are the technical ones.
SESSION = re.compile(r"\bsessions?\b", re.IGNORECASE)
SESSION_ALLOWED = re.compile(
    r"session advisory locks?|\*?session\*? mode|session storage|sessionStorage|needs? a session|session ends",
    re.IGNORECASE,
)


def shipped_files() -> list[Path]:
    files = [ROOT / name for name in ("README.md", "ARCHITECTURE.md", "CHANGELOG.md", "Makefile", "pyproject.toml")]
    files.append(ROOT / ".ci" / "run")
    for folder in ("docs", "kms_service", "bench", "deploy", "migrations"):
        files += [
            path
            for path in (ROOT / folder).rglob("*")
            if path.is_file() and path.suffix in TEXT_SUFFIXES and "__pycache__" not in path.parts
        ]
    return sorted(path for path in files if path.exists())


def findings(path: Path, text: str) -> list[str]:
    found = []
    for number, line in enumerate(text.splitlines(), 1):
        for pattern, meaning in BANNED.items():
            if match := re.search(pattern, line, re.IGNORECASE):
                found.append(f"{path}:{number}: {match.group(0)!r} ({meaning})")
        if path.suffix == ".md":
            prose = SESSION_ALLOWED.sub("", re.sub(r"`[^`]*`", "", line))
            if match := SESSION.search(prose):
                found.append(f"{path}:{number}: {match.group(0)!r} (a work session)")
    return found


def test_shipped_text_speaks_of_the_product_only():
    files = shipped_files()
    assert len(files) > 100 and ROOT / "README.md" in files
    problems = [
        problem
        for path in files
        for problem in findings(path.relative_to(ROOT), path.read_text(encoding="utf-8", errors="replace"))
    ]
    assert problems == []


@pytest.mark.parametrize(
    "line",
    [
        "Batches and the tail (an earlier stop's work; CHANGELOG).",
        "No target of issue 9 was reached.",
        "as in the seed's rotate example",
        "Figures from this session.",
        "The last stop measured 1.2 s.",
        "against the issue's targets",
        "shared with another engineer's tests",
        "Fixed in the session before.",
        "Vault issue #13025",
    ],
)
def test_each_kind_of_process_word_is_found(line):
    assert findings(Path("README.md"), line), line


@pytest.mark.parametrize(
    "line",
    [
        "LISTEN and session advisory locks need a session: use a pooler in *session* mode.",
        "The console keeps the token in session storage (`sessionStorage`), never in localStorage.",
        "Go's private key is the seed then the public key; its seed is HKDF's output.",
        "A client that stops sending is cut off; clients that stop reading too.",
        "`KMS.session(settings)` opens the service.",
        "([hashicorp/vault#13025](https://github.com/hashicorp/vault/issues/13025))",
    ],
)
def test_product_words_pass(line):
    assert findings(Path("docs/x.md"), line) == []
