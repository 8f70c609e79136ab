"""No module of the project uses another module's private (`_name`) names.

A name with a leading underscore is free to change with its module; a caller elsewhere that imports it
(`from labelwise.x import _helper`) or reaches for it (`x._helper`, `monkeypatch.setattr(x, "_helper",
...)`) breaks silently when it does.  What another module needs is public, or the caller goes through
the public API.  This test reads every Python file of labelwise/, workflow/scripts/, benchmarks/ and
tests/, and the import lines and dotted `labelwise.` names of the Snakefile and rules/*.smk, and
names each such use by file:line.
Dunder names (`__version__`) are public by convention; third-party modules (torch, snakemake) are not
this project's to fix and are left out.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

from conftest import REPO

FOLDERS = ("labelwise", "workflow/scripts", "benchmarks", "tests")
SNAKE_FILES = [REPO / "Snakefile", *sorted((REPO / "rules").glob("*.smk"))]
SNAKE_PRIVATE = re.compile(r"\blabelwise(?:\.\w+)*\.(_\w+)")


def python_files() -> list[Path]:
    return sorted(p for folder in FOLDERS for p in (REPO / folder).rglob("*.py"))


def project_top_names() -> set[str]:
    """First components a project import can start with: the top-level modules and packages of the
    folders that are on sys.path when their code runs (`labelwise`; `harness` and `cases` of
    benchmarks/, `conftest` and `test_train` of tests/), not the package's own submodules, whose
    names can be the standard library's (`labelwise/io.py`)."""
    names = set()
    for path in python_files():
        if not (path.parent / "__init__.py").exists():
            names.add(path.stem)
        elif not (path.parent.parent / "__init__.py").exists():
            names.add(path.parent.name)
    return names


def is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__")) and name != "_"


def private_uses(tree: ast.AST, project: set[str]) -> list[tuple[int, str]]:
    """(line, what) of each private name of a project module that `tree` imports or reaches for."""
    found, bound = [], set()  # bound: local names that stand for a project module or one of its names

    def is_project(module: str | None, level: int) -> bool:
        return level > 0 or (module or "").split(".")[0] in project

    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and is_project(node.module, node.level):
            source = "." * node.level + (node.module or "")
            for alias in node.names:
                if is_private(alias.name):
                    found.append((node.lineno, f"from {source} import {alias.name}"))
                bound.add(alias.asname or alias.name)
            for part in (node.module or "").split("."):
                if is_private(part):
                    found.append((node.lineno, f"from {source} import ..."))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if is_project(alias.name, 0):
                    bound.add(alias.asname or alias.name.split(".")[0])
                    if any(is_private(part) for part in alias.name.split(".")):
                        found.append((node.lineno, f"import {alias.name}"))
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and is_private(node.attr):
            root = node.value
            while isinstance(root, ast.Attribute):
                root = root.value
            if isinstance(root, ast.Name) and root.id in bound:
                found.append((node.lineno, f"{ast.unparse(node)}"))
        elif isinstance(node, ast.Call) and len(node.args) >= 2:
            # setattr/getattr/hasattr/delattr and monkeypatch.setattr(module, "_name", ...)
            target, name = node.args[0], node.args[1]
            called = ast.unparse(node.func)
            if (
                called.split(".")[-1] in ("setattr", "getattr", "hasattr", "delattr")
                and isinstance(target, ast.Name)
                and target.id in bound
                and isinstance(name, ast.Constant)
                and isinstance(name.value, str)
                and is_private(name.value)
            ):
                found.append((node.lineno, f"{called}({target.id}, {name.value!r}, ...)"))
        if isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            # monkeypatch.setattr("labelwise.x._name", ...) / mock.patch("labelwise.x._name")
            text = node.args[0].value
            if (
                isinstance(text, str)
                and re.fullmatch(r"[\w.]+", text)
                and text.split(".")[0] in project
                and "." in text
                and any(is_private(part) for part in text.split("."))
                and ast.unparse(node.func).split(".")[-1] in ("setattr", "patch", "delattr")
            ):
                found.append((node.lineno, f"{ast.unparse(node.func)}({text!r}, ...)"))
    return sorted(set(found))


def snake_import_lines(path: Path) -> str:
    """The Snakefile's / a rule file's Python import statements, blanked elsewhere so line numbers hold
    (the rest is Snakemake's syntax, which `ast` cannot read)."""
    keep = re.compile(r"^\s*(from\s+\S+\s+import\s+[^(\\]+|import\s+[^(\\]+)$")
    return "\n".join(line.strip() if keep.match(line) else "" for line in path.read_text().splitlines())


def test_checker_finds_each_kind_of_private_use():
    # The checker itself, on code with every kind of use it looks for and uses it must let pass.
    code = (
        "import labelwise.train.loop as loop\n"
        "import torch\n"
        "from labelwise.metrics.evaluate import _num, settings_with_defaults\n"
        "from .gpu import _save_partial\n"
        "from labelwise import device as lw_device\n"
        "loop._Cadence\n"
        "lw_device._claimed[1].close()\n"
        "monkeypatch.setattr(lw_device, '_claimed', None)\n"
        "monkeypatch.setattr('labelwise.train.engine._graph_unsupported', None)\n"
        "torch._dynamo\n"
        "self._x\n"
        "lw_device.__file__\n"
        "settings_with_defaults.__doc__\n"
    )
    uses = private_uses(ast.parse(code), {"labelwise"})
    assert [line for line, _ in uses] == [3, 4, 6, 7, 8, 9], uses


def test_no_module_uses_another_modules_private_names():
    project = project_top_names()
    problems = []
    for path in python_files():
        tree = ast.parse(path.read_text(), filename=str(path))
        problems += [f"{path.relative_to(REPO)}:{line}: {what}" for line, what in private_uses(tree, project)]
    for path in SNAKE_FILES:
        tree = ast.parse(snake_import_lines(path), filename=str(path))
        problems += [f"{path.relative_to(REPO)}:{line}: {what}" for line, what in private_uses(tree, project)]
        for number, line in enumerate(path.read_text().splitlines(), 1):
            # the rules call the package by its full dotted names (labelwise.plan.train_settings)
            problems += [
                f"{path.relative_to(REPO)}:{number}: {m.group(0)}"
                for m in SNAKE_PRIVATE.finditer(line)
                if is_private(m.group(1))
            ]
    assert not problems, (
        "private names used outside their module; make them public (and rename their "
        "uses) or go through the public API:\n  " + "\n  ".join(problems)
    )
