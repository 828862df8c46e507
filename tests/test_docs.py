"""The docs cannot drift: the command reference is what the commands are, every variable and services-YAML
field is documented, every error message in troubleshooting.md still exists in the code, and every link in
the README and docs/ resolves (files and their headings)."""

from __future__ import annotations

import dataclasses
import importlib.util
import re
from pathlib import Path

import click

from kms_service import acl, config
from kms_service.cli import main, serve
from kms_service.cli_common import duration_text
from kms_service.settings import SETTINGS, Setting

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
    assert reference.current() == reference.reference(), "stale: run make docs (docs/cli_reference.py --write)"


def _serve_help() -> str:
    """``serve --help`` as click renders it (in this process: a subprocess costs seconds on a loaded machine)."""
    with click.Context(main, info_name="kms-service") as parent:
        return serve.get_help(click.Context(serve, info_name="serve", parent=parent))


def _help_entries(text: str) -> dict[str, str]:
    """Each option's entry of a --help text, by its first flag, whitespace made single spaces."""
    entries: dict[str, str] = {}
    flag = None
    for line in text.splitlines():
        if match := re.match(r"^  (--[a-z-]+)", line):
            flag = match.group(1)
            entries[flag] = ""
        if flag is not None:
            entries[flag] = " ".join((entries[flag] + " " + line).split())
    return entries


def _doc_rows(text: str) -> dict[str, list[str]]:
    """The cells of each option's row in docs/configuration.md's serve section, by its first flag."""
    section = text[text.index("### `kms-service serve`") :]
    section = section[: section.index("\n### ")]
    rows = {}
    for line in section.splitlines():
        if match := re.match(r"^\| `(--[a-z-]+)`", line):
            rows[match.group(1)] = [cell.strip() for cell in re.split(r"(?<!\\)\|", line.strip()[1:-1])]
    return rows


def _shown_default(setting: Setting) -> str | None:
    """The default --help shows for ``setting`` (None: it shows none)."""
    if setting.kind is bool:
        name = setting.flag.removeprefix("--")
        return (name if setting.default else f"no-{name}") if setting.negatable else None
    if setting.default is None:
        return None
    return duration_text(setting.default) if setting.duration else str(setting.default)


def setting_mismatches(setting: Setting, help_text: str, doc_text: str) -> list[str]:
    """How ``serve --help`` and docs/configuration.md differ from what the settings table declares."""
    problems = []
    entry = _help_entries(help_text).get(setting.flag)
    if entry is None:
        problems.append(f"{setting.flag}: not in serve --help")
    else:
        if " ".join(setting.help.split()) not in entry:
            problems.append(f"{setting.flag}: another help in serve --help")
        if setting.envvar not in entry:
            problems.append(f"{setting.flag}: serve --help does not name {setting.envvar}")
        default = _shown_default(setting)
        if default is not None and not re.search(rf"default: {re.escape(default)}[;\]]", entry):
            problems.append(f"{setting.flag}: serve --help does not show the default {default}")
    row = _doc_rows(doc_text).get(setting.flag)
    if row is None or len(row) != 4:
        problems.append(f"{setting.flag}: not in docs/configuration.md's table")
    else:
        shown = _shown_default(setting) if setting.kind is not bool else None  # flags: no default column
        if row[1] != f"`{setting.envvar}`":
            problems.append(f"{setting.flag}: docs/configuration.md names {row[1]}, not {setting.envvar}")
        if row[2] != (f"`{shown}`" if shown is not None else ""):
            problems.append(f"{setting.flag}: docs/configuration.md shows the default {row[2]}")
        if " ".join(setting.help.split()) not in row[3]:
            problems.append(f"{setting.flag}: another help in docs/configuration.md")
    return problems


def test_every_setting_is_in_serve_help_and_the_docs_as_declared():
    help_text, doc_text = _serve_help(), CONFIGURATION.read_text(encoding="utf-8")
    assert len(SETTINGS) >= 30
    assert [problem for s in SETTINGS for problem in setting_mismatches(s, help_text, doc_text)] == []
    # Each setting is a Settings field of its kind, and serve takes exactly the table's options (and logging's).
    option_names = {p.name for p in serve.params}
    assert {s.name for s in SETTINGS} == option_names - {"log_format", "log_level"}


def test_a_setting_other_than_declared_is_a_mismatch():
    help_text, doc_text = _serve_help(), CONFIGURATION.read_text(encoding="utf-8")
    by_name = {s.name: s for s in SETTINGS}
    changed = {
        "another default": dataclasses.replace(by_name["max_json_depth"], default=33),
        "another duration": dataclasses.replace(by_name["max_token_ttl"], default=3600),
        "another flag default": dataclasses.replace(by_name["access_log"], default=True),
        "another help": dataclasses.replace(by_name["cache_ttl"], help="Seconds a cached key lives."),
        "another flag": dataclasses.replace(by_name["host"], flag="--listen-host"),
    }
    for what, setting in changed.items():
        assert setting_mismatches(setting, help_text, doc_text), what
    undocumented = doc_text.replace(
        "| `--max-json-depth` | `KMS_MAX_JSON_DEPTH` | `32` |", "| `--max-json-depth` | | `32` |"
    )
    assert setting_mismatches(by_name["max_json_depth"], help_text, undocumented)


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
