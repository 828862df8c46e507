"""The docs cannot drift: the command reference is what the commands are, every variable and services-YAML
field is documented, every error message in troubleshooting.md still exists in the code, and every link in
the README and docs/ resolves (files and their headings)."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import click

from kms_service import acl, config
from kms_service.cli import main

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
CONFIGURATION = DOCS / "configuration.md"


def _reference_module():
    spec = importlib.util.spec_from_file_location("cli_reference", DOCS / "cli_reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_command_reference_is_generated_from_the_commands():
    reference = _reference_module()
    assert reference.current() == reference.reference(), "stale: run .venv/bin/python docs/cli_reference.py --write"


def test_every_flag_variable_and_yaml_field_is_documented():
    text = CONFIGURATION.read_text(encoding="utf-8")
    for path, command in _reference_module().commands(main):
        assert f"### `kms-service {' '.join(path)}`" in text
        for option in (p for p in command.params if isinstance(p, click.Option)):
            assert all(f"`{flag}`" in text for flag in option.opts), option.opts
            if isinstance(option.envvar, str):
                assert f"`{option.envvar}`" in text
    for variable in ("KMS_MASTER_KEY", "VAULT_ADDR", "VAULT_TOKEN", "BAO_ADDR", "BAO_TOKEN", "_KMS_SERVICE_COMPLETE"):
        assert f"`{variable}`" in text, variable
    for field in ("type", "disk", "configuration.endpoints", "policy", "key"):
        assert f"`{field}`" in text or f".{field}`" in text, field
    for value in (*config.SUPPORTED_VERSIONS, *acl.POLICY_TEMPLATES, *config.GRANT_KEY_TYPES):
        assert f"`{value}`" in text or f":{value}`" in text, value


def _source_text() -> str:
    """Every module's text, with implicitly concatenated string literals ("a " "b", across lines) joined, so a
    message split over two literals reads as it is printed."""
    text = "\n".join(p.read_text(encoding="utf-8") for p in (ROOT / "kms_service").rglob("*.py"))
    return re.sub(r"\"\s*\n\s*(?:f|rf|fr)?\"", "", text)


def test_every_troubleshooting_message_exists_in_the_code():
    source = _source_text()
    headings = re.findall(r"^### `(.+)`$", (DOCS / "troubleshooting.md").read_text(encoding="utf-8"), re.M)
    assert len(headings) >= 40
    missing = []
    for message in headings:
        fragments = [f for f in message.split("…") if len(f.strip()) >= 3]
        assert max(len(f) for f in fragments) >= 5, message  # something specific to look for
        if not all(f in source for f in fragments):
            missing.append(message)
    assert not missing, missing


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    lines = path.read_text(encoding="utf-8").splitlines()
    fenced, anchors = False, set()
    for line in lines:
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and (match := re.match(r"^#+ (.+)$", line)):
            anchors.add(_slug(match.group(1)))
    return anchors


def test_links_in_the_readme_and_docs_resolve():
    pages = [ROOT / "README.md", ROOT / "ARCHITECTURE.md", *DOCS.glob("*.md")]
    checked = 0
    for page in pages:
        text = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.S)
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"^[a-z]+:", target):
                continue  # an outside address
            file_part, _, anchor = target.partition("#")
            resolved = (page.parent / file_part).resolve() if file_part else page
            assert resolved.exists(), f"{page.name}: {target}"
            if anchor:
                assert anchor in _anchors(resolved), f"{page.name}: {target} (anchors: {sorted(_anchors(resolved))})"
            checked += 1
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for doc in ("docs/configuration.md", "docs/operations.md", "docs/troubleshooting.md"):
        assert f"]({doc})" in readme, doc
    assert checked >= 6
    # The README keeps the two commands first.
    first_block = readme[readme.index("```") : readme.index("```", readme.index("```") + 3)]
    assert "make run" in first_block and "make test" in first_block
