"""The package's shape, checked on its source: no import cycle, one reader of the environment, one builder
of AWS clients, thin handlers. Read with `ast` (nothing is imported), so a violation anywhere fails here."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

from tests.builders import ROOT

PACKAGE = ROOT / "layers" / "modelshield" / "modelshield"
FUNCTIONS = ROOT / "functions"
MAX_HANDLER_LINES = 50


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imported_names(name: str, path: Path, known: set[str]) -> Iterator[str]:
    """Every `modelshield.*` module `path` imports (absolute or relative, at any depth of the file)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                stem = ".".join(base + ([node.module] if node.module else []))
            else:
                stem = node.module or ""
            # `from a import b` imports a.b when b is a module, else just a
            targets = [f"{stem}.{a.name}" if f"{stem}.{a.name}" in known else stem for a in node.names]
        else:
            continue
        for target in targets:
            while target and target not in known:  # `import a.b.c` loads a, a.b and a.b.c
                target = target.rpartition(".")[0]
            if target.startswith("modelshield") and target != name:
                yield target


def import_graph() -> dict[str, set[str]]:
    found = modules()
    known = set(found)
    graph: dict[str, set[str]] = {}
    for name, path in found.items():
        edges = set(imported_names(name, path, known))
        # importing a.b.c first runs a and a.b: a package's __init__ is part of every import below it
        for target in list(edges):
            parts = target.split(".")
            edges.update(".".join(parts[:i]) for i in range(1, len(parts)) if ".".join(parts[:i]) != name)
        graph[name] = {e for e in edges if not name.startswith(e + ".")}  # a module's own parents run first
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a path a -> b -> ... -> a, or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt)) is not None:
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)) is not None:
            return cycle
    return None


def test_the_cycle_finder_finds_a_planted_cycle() -> None:
    # Given a graph with a three-module cycle next to an acyclic branch
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set()}
    # Then it is found, and removing one edge removes it
    assert find_cycle(graph) == ["a", "b", "c", "a"]
    graph["c"] = {"d"}
    assert find_cycle(graph) is None


def test_relative_and_from_imports_are_resolved(tmp_path: Path) -> None:
    # Given a module using a relative import of a sibling module and a name from a package
    source = tmp_path / "m.py"
    source.write_text("from . import store\nfrom ..errors import UsageError\nimport modelshield.models\n")
    known = {
        "modelshield",
        "modelshield.api",
        "modelshield.api.store",
        "modelshield.errors",
        "modelshield.models",
    }
    # Then each resolves to the module it loads
    found = set(imported_names("modelshield.api.m", source, known))
    assert found == {"modelshield.api.store", "modelshield.errors", "modelshield.models"}


def test_the_package_has_no_import_cycle() -> None:
    graph = import_graph()
    assert "modelshield.wiring" in graph and "modelshield.access" in graph["modelshield.wiring"]
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def _calls(path: Path) -> Iterator[tuple[int, str]]:
    """(line, dotted name) of every attribute access like `os.environ` or `boto3.client`."""
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            yield node.lineno, f"{node.value.id}.{node.attr}"
        elif isinstance(node, ast.ImportFrom) and node.module in ("os", "boto3"):
            for alias in node.names:
                yield node.lineno, f"{node.module}.{alias.name}"


def offenders(names: set[str], allowed: str) -> list[str]:
    return [
        f"{module}:{line}: {dotted}"
        for module, path in modules().items()
        if module != allowed
        for line, dotted in _calls(path)
        if dotted in names
    ]


def test_only_config_reads_the_environment() -> None:
    assert offenders({"os.environ", "os.getenv", "os.putenv", "os.unsetenv"}, "modelshield.config") == []


def test_only_the_wiring_module_builds_aws_clients() -> None:
    assert offenders({"boto3.client", "boto3.resource", "boto3.Session"}, "modelshield.wiring") == []


def test_the_guards_see_a_planted_violation(tmp_path: Path) -> None:
    # Given a module reading the environment and building a client
    planted = tmp_path / "bad.py"
    planted.write_text(
        "import os, boto3\nfrom os import environ\nx = os.environ['A']\nc = boto3.client('s3')\n"
    )
    # Then both are seen
    assert {d for _, d in _calls(planted)} >= {"os.environ", "boto3.client"}


def test_every_handler_is_thin() -> None:
    handlers = sorted(FUNCTIONS.glob("*/app.py"))
    assert len(handlers) >= 4
    long = {
        str(p.relative_to(ROOT)): n
        for p in handlers
        if (n := len(p.read_text().splitlines())) > MAX_HANDLER_LINES
    }
    assert long == {}


def test_tests_share_helpers_through_builders_and_never_edit_sys_path() -> None:
    # Helpers come from tests/builders.py (or another helper module), never from a conftest, and no test
    # file changes the import path (pytest's `pythonpath = ["."]` makes `tests.*` importable).
    problems = []
    for path in sorted((ROOT / "tests").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            where = f"{path.relative_to(ROOT)}:{getattr(node, 'lineno', 0)}"
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
                if (node.value.id, node.attr) == ("sys", "path"):
                    problems.append(f"{where}: sys.path")
            elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[-1] == "conftest":
                problems.append(f"{where}: imports from {node.module}")
            elif isinstance(node, ast.Import) and any(
                a.name.split(".")[-1] == "conftest" for a in node.names
            ):
                problems.append(f"{where}: imports a conftest")
    assert problems == []
