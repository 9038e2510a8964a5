"""The package's shape: no import cycles, nothing imports the package ``__init__``, modules stay small.

Imports are read with ``ast`` from the source, not by importing: every ``import`` and ``from ...
import`` anywhere in a module counts, including those under ``if TYPE_CHECKING:`` and inside
functions (a function-local import is a cycle postponed, not removed). Relative imports are
resolved against the importing module's package. ``from pkg import name`` is an edge to
``pkg.name`` when that is a module of the package, else to ``pkg``.
"""

from __future__ import annotations

import ast
import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest_abtraffic

PACKAGE = "pytest_abtraffic"
ROOT = Path(pytest_abtraffic.__file__).resolve().parent
MAX_LINES = 800


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def _imports(name: str, path: Path, known: set[str]) -> Iterator[tuple[str, int]]:
    """(imported module inside the package, line) for every import statement of one module."""
    is_package = path.name == "__init__.py"
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == PACKAGE or alias.name.startswith(PACKAGE + "."):
                    yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                package = name.split(".") if is_package else name.split(".")[:-1]
                base_parts = package[: len(package) - (node.level - 1)]
                base = ".".join(base_parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            if base != PACKAGE and not base.startswith(PACKAGE + "."):
                continue
            submodules = [f"{base}.{alias.name}" for alias in node.names if f"{base}.{alias.name}" in known]
            if submodules:
                for sub in submodules:
                    yield sub, node.lineno
                if len(submodules) < len(node.names):
                    yield base, node.lineno  # names from the package's __init__ as well
            else:
                yield base, node.lineno


def import_graph() -> dict[str, dict[str, int]]:
    """module -> {imported module: first line}, modules of the package only."""
    modules = _modules()
    known = set(modules)
    graph: dict[str, dict[str, int]] = {}
    for name, path in modules.items():
        edges: dict[str, int] = {}
        for target, line in _imports(name, path, known):
            if target != name and target in known:
                edges.setdefault(target, line)
        graph[name] = edges
    return graph


def find_cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """One shortest cycle per strongly connected component with more than one module (Tarjan, then BFS)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    counter = 0

    def strongconnect(v: str) -> None:
        nonlocal counter
        index[v] = low[v] = counter
        counter += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                strongconnect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            strongconnect(v)
    cycles = []
    for component in components:
        members = set(component)
        start = component[0]
        # Breadth-first from start back to start, inside the component: the shortest cycle through it.
        parents: dict[str, str] = {}
        frontier = [start]
        found = None
        while frontier and found is None:
            nxt = []
            for v in frontier:
                for w in sorted(graph[v]):
                    if w not in members:
                        continue
                    if w == start:
                        found = v
                        break
                    if w not in parents:
                        parents[w] = v
                        nxt.append(w)
                if found is not None:
                    break
            frontier = nxt
        assert found is not None
        path = [found]
        while path[-1] != start:
            path.append(parents[path[-1]])
        cycles.append([*reversed(path), start])
    return cycles


def _describe(cycle: list[str], graph: dict[str, dict[str, int]]) -> str:
    hops = [f"{a} (line {graph[a][b]}) -> {b}" for a, b in itertools.pairwise(cycle)]
    return "cycle: " + " ; ".join(hops)


def test_the_graph_sees_every_kind_of_import() -> None:
    """The parser must see what the cycle test relies on, or that test could not fail."""
    graph = import_graph()
    # relative from-import of a module and of a name, resolved
    assert "pytest_abtraffic._load._protocol" in graph["pytest_abtraffic._load._driver"]
    assert "pytest_abtraffic._errors" in graph["pytest_abtraffic._fallback"]
    # under TYPE_CHECKING
    assert "pytest_abtraffic._backend" in graph["pytest_abtraffic._runner"]
    # function-local
    assert "pytest_abtraffic._stats" in graph["pytest_abtraffic._runner"]
    # two levels up
    assert "pytest_abtraffic._version" in graph["pytest_abtraffic._report._html"]
    # a package's __init__ resolves its own relative imports against itself
    assert "pytest_abtraffic._local._proxy._serve" in graph["pytest_abtraffic._local._proxy"]
    assert find_cycles({"a": {"b": 1}, "b": {"c": 2}, "c": {"a": 3}, "d": {"a": 4}}) == [["a", "b", "c", "a"]]


def test_no_import_cycle_inside_the_package() -> None:
    graph = import_graph()
    cycles = find_cycles(graph)
    assert not cycles, "import cycles inside pytest_abtraffic (TYPE_CHECKING and function-local imports count):\n" + (
        "\n".join(_describe(c, graph) for c in cycles))


def test_no_module_imports_the_package_init() -> None:
    """``from pytest_abtraffic import X`` / ``from . import X`` in a top-level module runs the public
    ``__init__`` (and its lazy exports) from inside: the kind of import that makes cycles."""
    graph = import_graph()
    offenders = [f"{name} (line {edges[PACKAGE]})" for name, edges in graph.items()
                 if name != PACKAGE and PACKAGE in edges]
    assert not offenders, f"modules importing the package __init__: {offenders}"


def test_no_module_is_over_800_lines() -> None:
    sizes = {str(p.relative_to(ROOT)): len(p.read_text(encoding="utf-8").splitlines()) for p in ROOT.rglob("*.py")}
    over = {name: n for name, n in sorted(sizes.items()) if n > MAX_LINES}
    assert not over, f"modules over {MAX_LINES} lines (split them where their concerns part): {over}"
