"""The package's layers: each imports only from itself and the layers below it (``LAYERS``), no module imports,
directly or through others, a module that imports it back, and no import hides inside a function to get round
that. Read from the source (ast), every import statement at any depth: module level, under ``if TYPE_CHECKING``
(a circle of types is still a circle of the design) and in functions.

Function-level imports of the package's own modules are allowed in the command modules (``cli``, ``cli_*``:
a command imports the service, the database and the crypto libraries in its function, so that ``--help``,
``--version`` and every other command start at once; tests/test_cli_startup.py holds the time), and elsewhere
only in ``LAZY``, each with its reason: the HTTP side and the worker pool only where serve needs them.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "kms_service"

# Bottom up: the modules of each layer (by name or package), which import only from their own layer and the
# ones before it. The package's other top-level modules are the domain, the lowest layer: keys and their
# types, the seal, policies, audit records, configuration files.
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("domain", ()),
    ("storage", ("kms_service.storage", "kms_service.migrations")),
    ("services", ("kms_service.settings", "kms_service.service")),
    ("web", ("kms_service.web",)),
    (
        "command line",
        ("kms_service.cli", "kms_service.cli_*", "kms_service.serving", "kms_service.workers", "kms_service.__main__"),
    ),
)

_HTTP_SIDE = "aiohttp's server and the web layer: only serve needs them"
LAZY: dict[tuple[str, str], str] = {
    ("kms_service.serving", "kms_service.web.app"): _HTTP_SIDE,
    ("kms_service.serving", "kms_service.web.request_audit"): _HTTP_SIDE,
    ("kms_service.serving", "kms_service.web.routing"): _HTTP_SIDE,
    ("kms_service.serving", "kms_service.web.server"): _HTTP_SIDE,
    ("kms_service.serving", "kms_service.web.sys_metrics"): _HTTP_SIDE,
    ("kms_service.settings", "kms_service.storage.database"): "the commands read the settings table at start-up",
}
COMMAND_MODULES = ("kms_service.cli", "kms_service.cli_")


@dataclass(frozen=True)
class Import:
    importer: str
    imported: str
    line: int
    in_function: bool


def package_modules(root: Path) -> dict[str, Path]:
    """Every module of the package by dotted name (a package by its ``__init__``)."""
    modules = {}
    # migrations/ installs as kms_service.migrations (pyproject.toml's package-dir).
    for tree, prefix in ((root / PACKAGE, (PACKAGE,)), (root / "migrations", (PACKAGE, "migrations"))):
        for path in sorted(tree.rglob("*.py")):
            parts = (*prefix, *path.relative_to(tree).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules[".".join(parts)] = path
    return modules


def _targets(node: ast.Import | ast.ImportFrom, importer: str, is_package: bool, modules: dict[str, Path]):
    if isinstance(node, ast.Import):
        yield from (alias.name for alias in node.names)
        return
    base = node.module or ""
    if node.level:
        package = importer.split(".") if is_package else importer.split(".")[:-1]
        package = package[: len(package) - node.level + 1]
        base = ".".join([*package, *([node.module] if node.module else [])])
    for alias in node.names:
        # ``from package import module`` imports the module; ``from module import name``, the module.
        yield f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base


class _Imports(ast.NodeVisitor):
    def __init__(self, importer: str, is_package: bool, modules: dict[str, Path]) -> None:
        self.importer, self.is_package, self.modules = importer, is_package, modules
        self.found: list[Import] = []
        self._depth = 0

    def _function(self, node: ast.AST) -> None:
        self._depth += 1
        self.generic_visit(node)
        self._depth -= 1

    visit_FunctionDef = visit_AsyncFunctionDef = visit_Lambda = _function

    def _import(self, node: ast.Import | ast.ImportFrom) -> None:
        for target in _targets(node, self.importer, self.is_package, self.modules):
            if target.split(".")[0] == PACKAGE and target != self.importer:
                self.found.append(Import(self.importer, target, node.lineno, self._depth > 0))

    visit_Import = visit_ImportFrom = _import


def imports(root: Path) -> list[Import]:
    modules = package_modules(root)
    found = []
    for name, path in modules.items():
        visitor = _Imports(name, path.name == "__init__.py", modules)
        visitor.visit(ast.parse(path.read_text(), filename=str(path)))
        found += visitor.found
    return found


def circles(found: list[Import]) -> list[list[str]]:
    """One circle (a path back to its start) per strongly connected group of modules."""
    graph: dict[str, set[str]] = {}
    for edge in found:
        graph.setdefault(edge.importer, set()).add(edge.imported)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    groups: list[set[str]] = []

    def connect(module: str) -> None:  # Tarjan's algorithm
        index[module] = low[module] = len(index)
        stack.append(module)
        for other in sorted(graph.get(module, ())):
            if other not in index:
                connect(other)
                low[module] = min(low[module], low[other])
            elif other in stack:
                low[module] = min(low[module], index[other])
        if low[module] == index[module]:
            group = set()
            while True:
                member = stack.pop()
                group.add(member)
                if member == module:
                    break
            if len(group) > 1:
                groups.append(group)

    for module in sorted(graph):
        if module not in index:
            connect(module)
    return [_circle_in(group, graph) for group in groups]


def _circle_in(group: set[str], graph: dict[str, set[str]]) -> list[str]:
    """A shortest way from the group's first module back to itself, inside the group."""
    start = min(group)
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        following = []
        for module in frontier:
            for other in sorted(graph[module] & group):
                if other == start:
                    return [*paths[module], start]
                if other not in paths:
                    paths[other] = [*paths[module], other]
                    following.append(other)
        frontier = following
    raise AssertionError(f"{sorted(group)} is no circle")


def layer_of(module: str) -> int:
    """The index in ``LAYERS`` of the layer ``module`` belongs to."""
    for index, (_, members) in enumerate(LAYERS):
        for member in members:
            if member.endswith("*") and module.startswith(member[:-1]):
                return index
            if module == member or module.startswith(member + "."):
                return index
    return 0


def test_each_layer_imports_only_itself_and_the_layers_below() -> None:
    name = {module: LAYERS[layer_of(module)][0] for e in imports(ROOT) for module in (e.importer, e.imported)}
    upward = [
        f"{e.importer}:{e.line} ({name[e.importer]}) imports {e.imported} ({name[e.imported]})"
        for e in imports(ROOT)
        if layer_of(e.imported) > layer_of(e.importer)
    ]
    assert upward == []


def test_no_module_imports_one_that_imports_it_back() -> None:
    assert [" -> ".join(circle) for circle in circles(imports(ROOT))] == []


def test_functions_import_the_package_only_to_start_faster() -> None:
    local = [edge for edge in imports(ROOT) if edge.in_function and not _is_command(edge.importer)]
    unlisted = [f"{e.importer}:{e.line} imports {e.imported}" for e in local if (e.importer, e.imported) not in LAZY]
    assert unlisted == []
    # And the list holds no pair that no longer occurs (each reason is about code that exists).
    assert sorted(set(LAZY) - {(e.importer, e.imported) for e in local}) == []


def _is_command(module: str) -> bool:
    return module == COMMAND_MODULES[0] or module.startswith(COMMAND_MODULES[1])


def test_the_reader_finds_every_kind_of_import(tmp_path: Path) -> None:
    """The checks above read what they should: a circle made of a TYPE_CHECKING import, a relative import
    and a function's import is found, and the function's import is told apart."""
    package = tmp_path / PACKAGE
    (package / "web").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "web" / "__init__.py").write_text("")
    (package / "a.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from kms_service.b import B\n"
    )
    (package / "b.py").write_text("from kms_service.web import c\n")
    (package / "web" / "c.py").write_text("def f():\n    from ..a import A\n")
    (package / "d.py").write_text("import kms_service.a\nfrom kms_service import web\n")

    found = imports(tmp_path)
    assert {(e.importer, e.imported, e.in_function) for e in found} == {
        ("kms_service.a", "kms_service.b", False),
        ("kms_service.b", "kms_service.web.c", False),
        ("kms_service.web.c", "kms_service.a", True),
        ("kms_service.d", "kms_service.a", False),
        ("kms_service.d", "kms_service.web", False),
    }
    assert circles(found) == [["kms_service.a", "kms_service.b", "kms_service.web.c", "kms_service.a"]]
    # And a module's layer: its package's, a command-line module's by its name, the domain otherwise.
    assert [LAYERS[layer_of(module)][0] for module in ("kms_service.a", "kms_service.web.c", "kms_service.cli_x")] == [
        "domain",
        "web",
        "command line",
    ]
