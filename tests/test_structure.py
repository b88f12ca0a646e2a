"""The package's shape, read from the source with `ast`: no import cycles, a thin CLI that nothing
else imports, the public API, and one writer of fronts and one statement of their objectives."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "netsize"
CLI_MAX_LINES = 120

ImportNode = ast.Import | ast.ImportFrom


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def parse(name: str) -> ast.Module:
    path = MODULES[name]
    return ast.parse(path.read_text(), str(path))


def is_package(name: str) -> bool:
    return MODULES[name].name == "__init__.py"


def is_netsize(name: str) -> bool:
    return name == "netsize" or name.startswith("netsize.")


# ------------------------------------------------------------------------- reading imports
def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def module_level_imports(nodes: Iterable[ast.AST]) -> Iterator[ImportNode]:
    """Imports that run when the module is imported: also inside classes, try, if and with
    blocks, but not inside functions nor under `if TYPE_CHECKING:` (its else branch does run)."""
    for node in nodes:
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            continue
        elif isinstance(node, ast.If) and _is_type_checking(node.test):
            yield from module_level_imports(node.orelse)
        else:
            yield from module_level_imports(ast.iter_child_nodes(node))


def base_module(importer: str, node: ImportNode) -> str | None:
    """The module an ImportFrom names, made absolute (relative imports resolved)."""
    if isinstance(node, ast.Import):
        return None
    if not node.level:
        return node.module
    package = importer if is_package(importer) else importer.rpartition(".")[0]
    for _ in range(node.level - 1):
        package = package.rpartition(".")[0]
    return f"{package}.{node.module}" if node.module else package


def imported_names(importer: str, node: ImportNode) -> Iterator[str]:
    """Every dotted name the statement mentions: `from a import b` gives a and a.b."""
    if isinstance(node, ast.Import):
        yield from (alias.name for alias in node.names)
        return
    base = base_module(importer, node)
    if base is None:
        return
    yield base
    yield from (f"{base}.{alias.name}" for alias in node.names if alias.name != "*")


def import_targets(importer: str, node: ImportNode) -> Iterator[str]:
    """The netsize modules the statement executes.

    `from netsize.x import y` is netsize.x.y when that is a module, else netsize.x, so
    `from netsize.graph import grow` depends on netsize.graph.grow, not only on the package
    netsize.graph. Importing a module also runs the packages above it first, except those above
    the importer itself (they are already in sys.modules while it is imported): netsize.recipe
    importing netsize.search.config depends on netsize.search too, netsize.search.study does
    not.
    """
    if isinstance(node, ast.Import):
        targets = [alias.name for alias in node.names]
    else:
        base = base_module(importer, node)
        if base is None:
            return
        targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base
                   for alias in node.names]
    running = importer.split(".")
    above_importer = {".".join(running[:i]) for i in range(1, len(running) + 1)}
    for target in targets:
        if not is_netsize(target):
            continue
        parts = target.split(".")
        for i in range(1, len(parts)):
            package = ".".join(parts[:i])
            if package not in above_importer:
                yield package
        yield target


def import_graph() -> dict[str, dict[str, int]]:
    """module -> {netsize module it imports at module level: line of the import}."""
    graph: dict[str, dict[str, int]] = {}
    for name in MODULES:
        edges = graph.setdefault(name, {})
        for node in module_level_imports(parse(name).body):
            for target in import_targets(name, node):
                if target != name and target in MODULES:
                    edges.setdefault(target, node.lineno)
    return graph


def find_cycle(graph: dict[str, dict[str, int]]) -> list[str] | None:
    """One cycle as [a, b, ..., a], or None when the graph is acyclic."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, {})):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state:
            found = visit(start)
            if found:
                return found
    return None


# ------------------------------------------------------------------------------ (a) cycles
def test_the_import_graph_is_read_as_python_runs_it():
    graph = import_graph()
    assert "netsize.runs" in graph["netsize"]  # a package importing its submodules
    assert "netsize.runs.grow" in graph["netsize.runs"]
    assert "netsize.graph.grow" in graph["netsize.networks"]  # `from netsize.graph import grow`
    assert "netsize" not in graph["netsize.train"]
    assert "netsize.recipe" not in graph["netsize.train"]  # only under `if TYPE_CHECKING:`
    assert "netsize.search.config" in graph["netsize.recipe"]
    assert "netsize.search" in graph["netsize.recipe"]  # runs search/__init__ first
    assert "netsize.search" not in graph["netsize.search.study"]
    assert find_cycle({"a": {"b": 1}, "b": {"c": 1}, "c": {"a": 1}, "d": {"a": 1}}) == [
        "a", "b", "c", "a"]
    assert find_cycle({"a": {"b": 1}, "b": {}, "c": {"a": 1, "b": 1}}) is None


def test_no_import_cycle_among_netsize_modules():
    graph = import_graph()
    cycle = find_cycle(graph)
    if cycle:
        steps = [f"{MODULES[a].relative_to(ROOT)}:{graph[a][b]} imports {b}"
                 for a, b in zip(cycle, cycle[1:], strict=False)]
        pytest.fail("import cycle " + " -> ".join(cycle) + ":\n  " + "\n  ".join(steps))


# --------------------------------------------------------------------------------- (b)-(c) CLI
def is_cli(name: str) -> bool:
    return name == "netsize.cli" or name.startswith("netsize.cli.")


def test_only_main_imports_the_cli():
    offenders = []
    for name in MODULES:
        if is_cli(name) or name == "netsize.__main__":
            continue
        for node in ast.walk(parse(name)):
            if isinstance(node, ast.Import | ast.ImportFrom):
                if any(is_cli(n) for n in imported_names(name, node)):
                    offenders.append(f"{MODULES[name].relative_to(ROOT)}:{node.lineno}")
            elif isinstance(node, ast.Constant) and isinstance(node.value, str) \
                    and re.fullmatch(r"netsize\.cli(\.\w+)*", node.value):  # importlib
                offenders.append(f"{MODULES[name].relative_to(ROOT)}:{node.lineno}")
    assert not offenders, f"only netsize/__main__.py may import netsize.cli: {offenders}"


def test_cli_modules_are_thin():
    long = {str(p.relative_to(ROOT)): n for p in sorted((PACKAGE / "cli").glob("*.py"))
            if (n := len(p.read_text().splitlines())) > CLI_MAX_LINES}
    assert not long, f"over {CLI_MAX_LINES} lines (move the work to netsize.runs): {long}"


# ---------------------------------------------------------------------------- (d) public API
def test_public_api_imports():
    from netsize import (
        compare_runs,
        load_checkpoint,
        load_recipe,
        run_grow,
        run_prune,
        run_study,
    )

    assert all(callable(f) for f in (load_recipe, run_grow, run_prune, run_study, compare_runs,
                                      load_checkpoint))


# ------------------------------------------------------------------- (e) fronts, objectives
def docstrings(tree: ast.AST) -> set[int]:
    """ids of the docstring nodes of the module, its classes and functions."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef) \
                and node.body and isinstance(node.body[0], ast.Expr) \
                and isinstance(node.body[0].value, ast.Constant):
            found.add(id(node.body[0].value))
    return found


def string_constants(tree: ast.AST) -> Iterator[tuple[str, str | None]]:
    """Every string literal but docstrings (f-string parts included), with the function it sits
    in (None at module level)."""
    skip = docstrings(tree)

    def visit(node: ast.AST, function: str | None) -> Iterator[tuple[str, str | None]]:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            function = node.name
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skip:
            yield node.value, function
        for child in ast.iter_child_nodes(node):
            yield from visit(child, function)

    yield from visit(tree, None)


def test_fronts_are_written_by_one_function():
    places = {(name, function) for name in MODULES
              for text, function in string_constants(parse(name))
              if "front.json" in text or "front.csv" in text}
    # one writer, and its reader beside it
    assert places == {("netsize.report", "write_front"), ("netsize.report", "read_front_record")}, \
        sorted(map(str, places))


def test_front_objectives_are_defined_once():
    from netsize.report import OBJECTIVES

    assert OBJECTIVES == {"val_metric": "maximize", "params": "minimize"}
    dicts, literals = [], []
    for name in MODULES:
        tree = parse(name)
        for node in ast.walk(tree):
            if isinstance(node, ast.Dict) and any(
                    isinstance(v, ast.Constant) and v.value in ("maximize", "minimize")
                    for v in node.values):
                dicts.append(name)
        literals += [name for text, _ in string_constants(tree)
                     if text.lower() in ("maximize", "minimize")]
    assert dicts == ["netsize.report"], dicts
    # netsize.search talks to optuna, whose directions may be named there
    assert {n for n in literals if not n.startswith("netsize.search")} == {"netsize.report"}
