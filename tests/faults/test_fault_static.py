"""Static checks of the source (AST, not grep) for two promises that a fault must not break:

* every file labelwise writes goes through a temporary name and a rename (`labelwise.io.atomic_path`):
  a write call (open for writing, torch.save, savefig, h5py.File for writing, np.save*, PIL save,
  Path.write_text/write_bytes, os.open for writing) outside io.py must sit inside a
  `with atomic_path(...) as tmp:` block and write to that temporary (or to a file opened on it), or
  write to an in-memory buffer (io.BytesIO);
* no code runs from a data file: every torch.load passes weights_only=True, nothing calls pickle's
  loaders or yaml.load, and np.load never allows pickles (CIFAR's pickles go through the restricted
  unpickler, tests/test_data.py::test_crafted_pickle_is_refused).

The few deliberate exceptions are listed in ALLOWED with their reason.
"""

from __future__ import annotations

import ast

import pytest
from conftest import REPO

pytestmark = pytest.mark.faults

SOURCES = sorted([*(REPO / "labelwise").rglob("*.py"), *(REPO / "workflow" / "scripts").glob("*.py")])
# (file relative to the repository, function) -> why this write is not atomic, on purpose.
ALLOWED = {
    ("labelwise/device.py", "_try_lock"): "a GPU lock file held with flock, not an output; its content is a note",
    ("labelwise/cli.py", "setup_logging"): "a job's log file: appended as the job runs, so that it can be followed",
    (
        "labelwise/train/writers.py",
        "checkpoint_lock",
    ): "a checkpoint folder's lock file held with flock, not an output; its content names the holder",
}
WRITE_MODES = set("wax+")
WRITE_FLAGS = {"O_WRONLY", "O_RDWR", "O_CREAT", "O_APPEND", "O_TRUNC"}


def _name(node) -> str:
    """Dotted name of a call's function: 'torch.save', 'np.savez', 'open', '.savefig' (method on an expression)."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        inner = _name(node.value)
        return f"{inner}.{node.attr}" if inner else f".{node.attr}"
    return ""


def _const(node):
    return node.value if isinstance(node, ast.Constant) else None


def _arg(call: ast.Call, index: int, keyword: str):
    for kw in call.keywords:
        if kw.arg == keyword:
            return kw.value
    return call.args[index] if len(call.args) > index else None


def _names_in(node) -> set[str]:
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name)} if node is not None else set()


def write_target(call: ast.Call):
    """(kind, the expression naming where it writes) if `call` writes a file, else None."""
    name = _name(call.func)
    last = name.rsplit(".", 1)[-1]
    if name == "open" or (last == "open" and name.count(".") >= 1 and name.split(".")[0] in ("", "Path")):
        mode_index = 1 if name == "open" else 0
        mode = _const(_arg(call, mode_index, "mode"))
        if isinstance(mode, str) and WRITE_MODES & set(mode):
            return "open", call.args[0] if name == "open" and call.args else call.func.value
        return None
    if name == "os.open":
        flags = (
            {n.attr for n in ast.walk(call.args[1]) if isinstance(n, ast.Attribute)} if len(call.args) > 1 else set()
        )
        return ("os.open", call.args[0]) if flags & WRITE_FLAGS else None
    if name == "torch.save":
        return "torch.save", _arg(call, 1, "f")
    if name in ("h5py.File",):
        mode = _const(_arg(call, 1, "mode"))
        return ("h5py.File", call.args[0]) if mode not in (None, "r") else None
    if name in ("np.save", "np.savez", "np.savez_compressed", "np.savetxt", "numpy.save", "numpy.savez"):
        return name, call.args[0] if call.args else None
    if last == "savefig":
        return "savefig", call.args[0] if call.args else None
    if last in ("write_text", "write_bytes") and isinstance(call.func, ast.Attribute):
        return f".{last}", call.func.value  # Path.write_text: the path is the receiver
    if last == "save" and isinstance(call.func, ast.Attribute):  # PIL's Image.save and the like
        return ".save", call.args[0] if call.args else None
    if last.endswith("FileHandler"):  # logging.FileHandler and subclasses named after it
        return "FileHandler", call.args[0] if call.args else None
    return None


class _Scanner(ast.NodeVisitor):
    """Walks one module keeping the enclosing function, the `as` names of enclosing atomic_path blocks,
    the names bound by `with open(...) as f` inside them, and names assigned from io.BytesIO()."""

    def __init__(self, rel: str):
        self.rel, self.function, self.atomic, self.files, self.memory = rel, "<module>", [], [], set()
        self.found: list[dict] = []

    def visit_FunctionDef(self, node):
        outer, saved_memory = self.function, set(self.memory)
        self.function = node.name
        self.generic_visit(node)
        self.function, self.memory = outer, saved_memory

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_Assign(self, node):
        if isinstance(node.value, ast.Call) and _name(node.value.func) in ("io.BytesIO", "BytesIO"):
            self.memory |= {t.id for t in node.targets if isinstance(t, ast.Name)}
        self.generic_visit(node)

    def visit_With(self, node):
        pushed_atomic, pushed_files = 0, 0
        for item in node.items:
            self.visit(item.context_expr)
            call = item.context_expr
            bound = _names_in(item.optional_vars)
            if isinstance(call, ast.Call) and _name(call.func).rsplit(".", 1)[-1] == "atomic_path":
                self.atomic.append(bound)
                pushed_atomic += 1
            elif isinstance(call, ast.Call) and self._writes_to_temporary(call):
                self.files.append(bound)  # `with open(tmp, "wb") as f`: f stands for the temporary
                pushed_files += 1
        for stmt in node.body:
            self.visit(stmt)
        del self.atomic[len(self.atomic) - pushed_atomic :]
        del self.files[len(self.files) - pushed_files :]

    def _writes_to_temporary(self, call) -> bool:
        target = write_target(call)
        temporaries = set().union(*self.atomic) if self.atomic else set()
        return target is not None and bool(_names_in(target[1]) & (temporaries | self.memory))

    def visit_Call(self, node):
        target = write_target(node)
        if target is not None:
            kind, where = target
            names = _names_in(where)
            temporaries = set().union(*self.atomic, *self.files) if self.atomic else set()
            ok = bool(names & temporaries) or bool(names & self.memory)
            self.found.append(
                {"file": self.rel, "function": self.function, "line": node.lineno, "kind": kind, "atomic": ok}
            )
        self.generic_visit(node)


def scan_writes(source: str, rel: str) -> list[dict]:
    scanner = _Scanner(rel)
    scanner.visit(ast.parse(source))
    return scanner.found


def test_scanner_tells_atomic_from_direct_writes():
    """The scanner itself: what it must flag and what it must accept."""
    code = """
import io, torch, h5py, numpy as np
def bad(path, fig, obj):
    open(path, "w").write("x")
    torch.save(obj, path)
    fig.savefig(path)
    h5py.File(path, "a")
    path.write_text("x")
    with atomic_path(path) as tmp:
        open(path, "wb")          # inside the block but not to the temporary
def good(path, fig, obj):
    open(path).read()
    h5py.File(path, "r")
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, a=1)
        fig.savefig(tmp, format="png")
        tmp.write_text("x")
    buffer = io.BytesIO()
    torch.save(obj, buffer)
"""
    found = scan_writes(code, "example.py")
    assert [(f["function"], f["kind"], f["atomic"]) for f in found] == [
        ("bad", "open", False),
        ("bad", "torch.save", False),
        ("bad", "savefig", False),
        ("bad", "h5py.File", False),
        ("bad", ".write_text", False),
        ("bad", "open", False),
        ("good", "open", True),
        ("good", "np.savez", True),
        ("good", "savefig", True),
        ("good", ".write_text", True),
        ("good", "torch.save", True),
    ]


def test_every_file_written_goes_through_a_temporary_and_a_rename():
    writes, offenders = [], []
    for path in SOURCES:
        rel = path.relative_to(REPO).as_posix()
        if rel == "labelwise/io.py":
            continue  # where the temporary and the rename live
        for found in scan_writes(path.read_text(), rel):
            writes.append(found)
            if not found["atomic"] and (rel, found["function"]) not in ALLOWED:
                offenders.append(f"{rel}:{found['line']} {found['kind']} in {found['function']}()")
    assert not offenders, "writes that bypass labelwise.io.atomic_path: " + "; ".join(offenders)
    # The scan does see the writers it vouches for (not vacuously green).
    kinds = {(w["file"], w["kind"]) for w in writes if w["atomic"]}
    for expected in [
        ("labelwise/images.py", "h5py.File"),
        ("labelwise/plots.py", "savefig"),
        ("labelwise/metrics/realstats.py", "np.savez"),
        ("labelwise/trainlog.py", "open"),
    ]:
        assert expected in kinds, expected
    assert {(w["file"], w["function"]) for w in writes if not w["atomic"]} == set(ALLOWED)


def _calls(tree):
    return [n for n in ast.walk(tree) if isinstance(n, ast.Call)]


def test_no_code_runs_from_data_files():
    offenders, loads = [], 0
    for path in SOURCES:
        rel = path.relative_to(REPO).as_posix()
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.ImportFrom)
                and node.module in ("torch", "pickle", "yaml")
                and any(a.name in ("load", "loads", "Unpickler") for a in node.names)
            ):
                offenders.append(f"{rel}:{node.lineno} imports {node.module}.load* by name (unchecked calls)")
        for call in _calls(tree):
            name = _name(call.func)
            if name == "torch.load":
                loads += 1
                weights_only = next((kw.value for kw in call.keywords if kw.arg == "weights_only"), None)
                if _const(weights_only) is not True:
                    offenders.append(f"{rel}:{call.lineno} torch.load without weights_only=True")
            elif name in ("pickle.load", "pickle.loads", "yaml.load", "yaml.unsafe_load", "marshal.loads"):
                offenders.append(f"{rel}:{call.lineno} {name}")
            elif name in ("pickle.Unpickler",) and rel != "labelwise/data/unpickle.py":
                offenders.append(f"{rel}:{call.lineno} {name} outside the restricted unpickler")
            elif name in ("np.load", "numpy.load"):
                allow = next((kw.value for kw in call.keywords if kw.arg == "allow_pickle"), None)
                if allow is not None and _const(allow) is not False:
                    offenders.append(f"{rel}:{call.lineno} np.load with allow_pickle")
    assert not offenders, "; ".join(offenders)
    assert loads >= 5  # checkpoints, generators, snapshots, classifier, Inception weights
