"""No import cycle inside the labelwise package.

Two modules that import each other (even one of them inside a function, the usual way of hiding a
cycle) mean that a concept lives in the wrong place: neither can be read, tested or imported without
the other.  This test reads every module of labelwise/ — imports at any depth, `TYPE_CHECKING` ones
included — builds the graph of which module imports which (an import of `a.b.c` also runs the
packages `a` and `a.b`, except from inside them, where they are already loaded), and names each
cycle with the file:line of its imports.
"""

from __future__ import annotations

import ast
from pathlib import Path

from conftest import REPO

PACKAGE = REPO / "labelwise"


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def all_modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imported(node: ast.AST, current: str, is_package: bool, known: set[str]) -> list[str]:
    """The labelwise modules an import statement runs: the module itself and its parent packages."""
    targets: list[str] = []
    if isinstance(node, ast.Import):
        targets = [alias.name for alias in node.names]
    elif isinstance(node, ast.ImportFrom):
        if node.level:
            base = current.split(".") if is_package else current.split(".")[:-1]
            base = base[: len(base) - (node.level - 1)]
            source = ".".join(base + ([node.module] if node.module else []))
        else:
            source = node.module or ""
        # `from pkg import name`: the submodule pkg.name when there is one, else pkg itself.
        targets = [f"{source}.{a.name}" if f"{source}.{a.name}" in known else source for a in node.names]
    # A module's own packages are loaded before it runs, so importing them (`from . import x`) adds nothing.
    ancestors = {".".join(current.split(".")[:i]) for i in range(1, current.count(".") + 1)}
    found = []
    for target in targets:
        parts = target.split(".")
        found += [".".join(parts[:i]) for i in range(1, len(parts) + 1) if ".".join(parts[:i]) in known]
    return [t for t in found if t != current and t not in ancestors]


def import_graph() -> dict[str, dict[str, int]]:
    """module -> {imported module: line of the first such import}."""
    modules = all_modules()
    known = set(modules)
    graph: dict[str, dict[str, int]] = {}
    for name, path in modules.items():
        edges: dict[str, int] = {}
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                for target in imported(node, name, path.name == "__init__.py", known):
                    edges.setdefault(target, node.lineno)
        graph[name] = edges
    return graph


def cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, {}):
            if w not in index:
                visit(w)
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
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_graph_sees_relative_lazy_and_package_imports():
    graph = import_graph()
    assert "labelwise.train.networks" in graph["labelwise.train.loop"]  # from .networks import ...
    assert "labelwise.train" in graph["labelwise.sample"]  # a submodule runs its package
    assert "labelwise.train" not in graph["labelwise.train.loop"]  # ... which its own modules find loaded
    assert "labelwise.models" in graph["labelwise.train.loop"]  # from .. import losses, models
    assert "labelwise.train.engine" in graph["labelwise.train.compute"]  # imported inside a function
    assert cycles({"a": {"b": 1}, "b": {"c": 1}, "c": {"a": 1}, "d": {"a": 1}}) == [["a", "b", "c"]]


def test_labelwise_has_no_import_cycle():
    graph = import_graph()
    modules = all_modules()
    problems = []
    for component in cycles(graph):
        members = set(component)
        edges = [
            f"{modules[a].relative_to(REPO)}:{line} imports {b}"
            for a in component
            for b, line in graph[a].items()
            if b in members
        ]
        problems.append(f"cycle {' <-> '.join(component)}: " + "; ".join(edges))
    assert not problems, "\n".join(problems)
