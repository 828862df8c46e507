"""ARCHITECTURE.md stays true where a test can tell: the files it names exist, the domain imports what it says,
SQL is written where it says, the web layer is imported where it says, the HTTP edge uses aiohttp's public
API only, and no module of the package outgrows one screenful of rooms (about 600 lines)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from test_layers import LAYERS, layer_of, package_modules

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "kms_service"
DOC = (ROOT / "ARCHITECTURE.md").read_text()
MAX_LINES = 600

# The third-party modules the domain may import, and the name the page gives each.
DOMAIN_DEPENDENCIES = {
    "cryptography": "`cryptography`",
    "nacl": "PyNaCl",
    "yaml": "PyYAML",
    "hcl2": "python-hcl2",
    "lark": "lark",
    "multidict": "multidict",
}
# Where SQL may be written besides storage/ and migrations/, as the page says.
SQL_OUTSIDE_STORAGE = {"kms_service/service/cluster.py", "kms_service/service/database_watch.py"}
SQL_NAMES = {"text", "select", "insert", "update", "delete"}
SQL_STATEMENT = re.compile(r"^\s*(SELECT|INSERT|UPDATE|DELETE|LOCK|LISTEN|CREATE|DROP)\s")
# aiohttp's public modules: what its documentation names for users.
AIOHTTP_PUBLIC = {"aiohttp", "aiohttp.web"}


def _modules() -> dict[str, Path]:
    return package_modules(ROOT)


def _trees() -> dict[str, tuple[Path, ast.Module]]:
    return {name: (path, ast.parse(path.read_text())) for name, path in _modules().items()}


def _imported(tree: ast.Module) -> set[str]:
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
    return names


def _relative(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def test_every_file_the_page_names_exists() -> None:
    named = set(re.findall(r"`([\w./]+\.py)(?::\w+)?`", DOC))
    files = {_relative(p) for p in ROOT.rglob("*.py") if ".venv" not in p.parts}
    basenames = {Path(f).name for f in files}
    missing = []
    for name in named:
        if "/" in name:
            if not any(f == name or f.endswith("/" + name) for f in files):
                missing.append(name)
        elif name not in basenames:
            missing.append(name)
    # The layers' map: every room (a module or a package) at the start of a line.
    block = DOC[DOC.index("## Layers") : DOC.index("## A request")]
    for room in re.findall(r"^  ([\w]+(?:\.py|/))\s", block, flags=re.M):
        if not (PACKAGE / room).exists():
            missing.append(f"kms_service/{room}")
    assert (ROOT / "migrations" / "versions").is_dir() and "migrations/" in block
    assert sorted(missing) == []


def test_the_domain_imports_what_the_page_says() -> None:
    domain = [name for name in _modules() if LAYERS[layer_of(name)][0] == "domain"]
    trees = _trees()
    third_party = set()
    for name in domain:
        for imported in _imported(trees[name][1]):
            top = imported.split(".")[0]
            if top != "kms_service" and top not in _standard_library():
                third_party.add(top)
    assert third_party == set(DOMAIN_DEPENDENCIES)
    sentence = DOC[DOC.index("The domain imports") :].split("\n\n")[0]
    assert [label for label in DOMAIN_DEPENDENCIES.values() if label not in sentence] == []


def _standard_library() -> frozenset[str]:
    import sys

    return frozenset(sys.stdlib_module_names) | {"__future__"}


def test_sql_is_written_where_the_page_says() -> None:
    found = []
    for path, tree in _trees().values():
        where = _relative(path)
        if where.startswith(("kms_service/storage/", "migrations/")) or where in SQL_OUTSIDE_STORAGE:
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("sqlalchemy"):
                found += [f"{where}: imports {a.name}" for a in node.names if a.name in SQL_NAMES]
            elif isinstance(node, ast.Constant) and isinstance(node.value, str) and SQL_STATEMENT.match(node.value):
                found.append(f"{where}:{node.lineno}: {node.value[:40]!r}")
    assert found == []
    # And the two services the page names do write SQL (or the sentence would be stale).
    for where in SQL_OUTSIDE_STORAGE:
        assert "text(" in (ROOT / where).read_text(), where


def test_only_serving_imports_the_web_layer_and_only_migration_talks_to_another_server() -> None:
    outside = {}
    clients = []
    for name, (_, tree) in _trees().items():
        imported = _imported(tree)
        if not name.startswith("kms_service.web") and any(i.startswith("kms_service.web") for i in imported):
            outside[name] = sorted(i for i in imported if i.startswith("kms_service.web"))
        if "ClientSession" in {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)}:
            clients.append(name)
    assert set(outside) == {"kms_service.serving"}, outside
    assert clients and all(c.startswith("kms_service.service.migration") for c in clients), clients


def test_the_edge_uses_aiohttp_public_api_only() -> None:
    """No aiohttp module but the documented ones, and no underscored name reached on anything but our own
    objects, in any module that imports aiohttp."""
    found = []
    for name, (_, tree) in _trees().items():
        aiohttp_modules = {i for i in _imported(tree) if i.split(".")[0] == "aiohttp"}
        found += [f"{name}: imports {m}" for m in aiohttp_modules - AIOHTTP_PUBLIC]
        if not aiohttp_modules:
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module in AIOHTTP_PUBLIC:
                found += [f"{name}: imports {a.name}" for a in node.names if a.name.startswith("_")]
            if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
                if not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")):
                    found.append(f"{name}:{node.lineno}: {ast.unparse(node)}")
    assert found == []
    pin = re.search(r'"aiohttp(>=[^"]+)"', (ROOT / "pyproject.toml").read_text())
    assert pin is not None and "<4" in pin.group(1) and "<3." not in pin.group(1)


def test_no_module_of_the_package_outgrows_its_room() -> None:
    long = {
        _relative(path): lines
        for path in list(PACKAGE.rglob("*.py")) + list((ROOT / "migrations").glob("*.py"))
        if (lines := len(path.read_text().splitlines())) > MAX_LINES
    }
    assert long == {}
