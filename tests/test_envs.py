"""The conda environments deploy what the rules run: checked statically, since conda channels and
container registries are out of reach here (`--sdm conda` cannot be run in CI).

For every rule with a `conda:` env, the third-party modules its code imports are found by reading
the source: its `script:` file, or the `labelwise` entry point its shell command runs, and then,
transitively, the labelwise modules imported on the way: of each, its module-level imports and those
inside the functions and classes used (and the functions of that module they call, since a stage
imports lazily inside functions).  `labelwise.cli` dispatches every stage, so of it only the stage a
rule runs counts (`snakemake_entry` for scripts, `main` and `cmd_<stage>` for `labelwise <stage>`).
Each third-party top-level module must come from a distribution pinned in
the rule's env file (importlib.metadata maps modules to distributions), every pin must equal
requirements.lock's, and each of those distributions must be declared in pyproject.toml.
"""

from __future__ import annotations

import ast
import functools
import importlib.metadata
import re
import sys
import tomllib
from pathlib import Path

import pytest
import yaml
from conftest import REPO, workflow_rules

DISPATCHER = "labelwise.cli"


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def module_file(module: str) -> Path | None:
    path = REPO.joinpath(*module.split("."))
    for candidate in (path.with_suffix(".py"), path / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _imports(nodes, package: str) -> list[tuple[str, list[str] | None]]:
    """(module, names or None) of every import statement under `nodes`, relative ones resolved."""
    found = []
    for node in nodes:
        for sub in ast.walk(node):
            if isinstance(sub, ast.Import):
                found += [(alias.name, None) for alias in sub.names]
            elif isinstance(sub, ast.ImportFrom):
                base = sub.module or ""
                if sub.level:
                    parts = package.split(".")[: len(package.split(".")) - sub.level + 1]
                    base = ".".join(parts + ([base] if base else []))
                found.append((base, [alias.name for alias in sub.names]))
    return found


def _defined(tree: ast.Module) -> set[str]:
    names = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names |= {t.id for t in targets if isinstance(t, ast.Name)}
    return names


DEFS = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)


def _used_nodes(tree: ast.Module, module: str | None, names) -> list:
    """What of a module runs when `names` of it are used: its module-level statements, and the
    functions and classes named, with those of the same module they refer to, transitively.  Of the
    dispatcher, only the stages named (its parser refers to every stage)."""
    body = [n for n in tree.body if not isinstance(n, DEFS)]
    defs = {n.name: n for n in tree.body if isinstance(n, DEFS)}
    if names is None:
        return body + list(defs.values())
    todo, used = [n for n in names if n in defs], set()
    while todo:
        name = todo.pop()
        if name in used:
            continue
        used.add(name)
        for sub in ast.walk(defs[name]):
            ref = sub.id if isinstance(sub, ast.Name) else None
            if ref in defs and ref not in used and not (module == DISPATCHER and ref.startswith("cmd_")):
                todo.append(ref)
    return body + [defs[n] for n in sorted(used)]


def third_party_imports(path: Path, module: str | None = None, names=None, seen=None) -> set[str]:
    """Top-level third-party module names that `names` of `path` (module `module`; None: all of it)
    need, transitively through the labelwise modules they import."""
    if module == DISPATCHER and names is None:  # `from . import cli`: its stages come from entry_points()
        names = {"main"}
    seen = set() if seen is None else seen
    key = (str(path), tuple(sorted(names)) if names is not None else None)
    if key in seen:
        return set()
    seen.add(key)
    tree = ast.parse(path.read_text())
    package = module if path.name == "__init__.py" else (module or "").rpartition(".")[0]
    used = _used_nodes(tree, module, names)
    if names is not None:
        # A name a module imports at its top only to re-export (labelwise.data's load_source) is
        # needed when asked for or referred to by what is used, not merely for being imported.
        wanted = set(names) | {
            n.id
            for node in used
            if not isinstance(node, ast.ImportFrom)
            for n in ast.walk(node)
            if isinstance(n, ast.Name)
        }
        used = [
            ast.ImportFrom(module=n.module, level=n.level, names=[a for a in n.names if (a.asname or a.name) in wanted])
            if isinstance(n, ast.ImportFrom)
            else n
            for n in used
        ]
    needed = set()
    for target, imported in _imports(used, package):
        top = target.split(".")[0]
        if top != "labelwise":
            if top and top not in sys.stdlib_module_names:
                needed.add(top)
            continue
        file = module_file(target)
        assert file is not None, f"{path}: imports {target}, which is not in the checkout"
        if imported is None:
            needed |= third_party_imports(file, target, None, seen)
            continue
        defined = _defined(ast.parse(file.read_text()))
        plain = set()
        for name in imported:
            submodule = f"{target}.{name}"
            if module_file(submodule):
                needed |= third_party_imports(module_file(submodule), submodule, None, seen)
            elif name not in defined and file.name == "__init__.py":
                # a lazily re-exported name (labelwise.metrics): the submodule that defines it
                owners = [p for p in file.parent.glob("*.py") if name in _defined(ast.parse(p.read_text()))]
                assert owners, f"{path}: {target} does not define {name}"
                for owner in owners:
                    needed |= third_party_imports(owner, f"{target}.{owner.stem}", {name}, seen)
            else:
                plain.add(name)
        needed |= third_party_imports(file, target, plain, seen)
    return needed


def rules() -> list[dict]:
    """name, env file, script and shell command of every rule, read by Snakemake itself."""
    return workflow_rules(REPO / "Snakefile", [REPO / "config.yaml"], REPO)


def entry_points(rule: dict) -> list[tuple[Path, str | None, set | None]]:
    """(file, module, names) where a rule's code starts."""
    if rule["script"]:
        script = (Path(rule["basedir"]) / rule["script"]).resolve()
        return [(script, None, None)]  # a script runs whole
    shell = rule["shell"] or ""
    entries = []
    for stage in re.findall(r"\blabelwise (\w+)", shell):
        entries.append((module_file(DISPATCHER), DISPATCHER, {"main", f"cmd_{stage}"}))
    for module in re.findall(r"python -m ([\w.]+)", shell):
        entries.append((module_file(module), module, {"main"}))  # `-m`: the module's main()
    if "python -m labelwise.scaling job" in shell:  # the timed job runs `labelwise train` in-process
        entries.append((module_file(DISPATCHER), DISPATCHER, {"main", "cmd_train"}))
    assert entries, f"rule {rule['name']}: no script and no known entry point in {shell!r}; teach entry_points() it"
    return entries


def env_pins(env_file: Path) -> dict[str, str]:
    spec = yaml.safe_load(env_file.read_text())
    pip = next(d["pip"] for d in spec["dependencies"] if isinstance(d, dict) and "pip" in d)
    pins = {}
    for line in pip:
        if "==" in line:
            name, version = line.split("==")
            pins[normalize(name)] = version.strip()
    return pins


def lock_pins() -> dict[str, str]:
    pins = {}
    for line in (REPO / "requirements.lock").read_text().splitlines():
        if "==" in line and not line.startswith("#"):
            name, version = line.split("==")
            pins[normalize(name)] = version.strip()
    return pins


@functools.cache
def distributions() -> dict:
    return importlib.metadata.packages_distributions()


def distribution_of(module: str) -> str:
    dists = distributions().get(module)
    assert dists, f"no installed distribution provides module {module!r}"
    return normalize(dists[0])


def declared_in_pyproject() -> set[str]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    specs = list(project["dependencies"]) + [d for extra in project["optional-dependencies"].values() for d in extra]
    return {normalize(re.split(r"[<>=!~ \[;]", spec, maxsplit=1)[0]) for spec in specs}


RULES = rules()


def test_the_import_reader_follows_lazy_imports_and_the_dispatcher():
    # the evaluate script reaches torch-fidelity only through labelwise.metrics' lazy exports and a
    # function-level import; threadpoolctl only inside labelwise.cli.snakemake_entry
    needed = third_party_imports(REPO / "workflow/scripts/evaluate.py")
    assert {"torch", "torch_fidelity", "threadpoolctl", "numpy", "h5py"} <= needed
    assert "matplotlib" not in needed  # and it does not drag in every stage of the command line
    assert "matplotlib" in third_party_imports(REPO / "workflow/scripts/sample_grid.py")


@pytest.mark.parametrize("rule", [r for r in RULES if r["env"]], ids=lambda r: r["name"])
def test_every_module_a_rule_imports_is_pinned_in_its_env_as_in_the_lock(rule):
    env_file = (Path(rule["basedir"]) / rule["env"]).resolve()
    pins, lock, declared = env_pins(env_file), lock_pins(), declared_in_pyproject()
    needed = set()
    for path, module, names in entry_points(rule):
        needed |= third_party_imports(path, module, names)
    for module in sorted(needed):
        dist = distribution_of(module)
        assert dist in pins, f"rule {rule['name']} imports {module} ({dist}); {env_file.name} does not pin it"
        assert dist in declared, f"{dist} (imported by rule {rule['name']}) is not declared in pyproject.toml"
    for dist, version in pins.items():
        assert lock.get(dist) == version, f"{env_file.name}: {dist}=={version}, requirements.lock: {lock.get(dist)}"


@pytest.mark.parametrize("env_file", sorted((REPO / "envs").glob("*.yaml")), ids=lambda p: p.name)
def test_env_files_install_labelwise_from_the_workflow_not_relative_to_their_copy(env_file):
    spec = yaml.safe_load(env_file.read_text())
    pip = next(d["pip"] for d in spec["dependencies"] if isinstance(d, dict) and "pip" in d)
    local = [line for line in pip if "==" not in line]
    # pip resolves a relative path from the folder of the requirements file conda writes next to
    # Snakemake's copy of this file (.snakemake/conda/): only the variable the Snakefile sets works
    assert local == ["-e ${LABELWISE_ROOT}"], local
    assert 'os.environ["LABELWISE_ROOT"] = workflow.basedir' in (REPO / "rules/common.smk").read_text()


def test_container_definition_installs_the_lock_and_the_snakefile_uses_it():
    definition = (REPO / "container/labelwise.def").read_text()
    assert "pip install -r /opt/labelwise/requirements.lock" in definition
    for copied in ("requirements.lock", "pyproject.toml", "labelwise"):
        assert re.search(rf"^\s+{copied} /opt/labelwise/{copied}$", definition, flags=re.M), copied
    assert re.search(r"^container: ", (REPO / "Snakefile").read_text(), flags=re.M)
