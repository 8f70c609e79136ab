"""Every stage's write failure ends in one error line: each `labelwise` stage run on a finished results
tree that it cannot write.

Tests run as root in CI, where chmod stops nothing and mounting a read-only file system may be
impossible.  Two ways that work as root:

* a real obstacle (`test_stage_with_its_output_folder_blocked_*`): the stage's output folder
  replaced by a regular file, so the kernel refuses to create or use it (EEXIST/ENOTDIR), through a
  real `python -m labelwise.cli` process;
* a read-only file system simulated in process (`test_stage_on_a_read_only_results_tree_*`): every
  call that would create, replace or remove a file or folder under the results tree raises
  EROFS ("Read-only file system", the errno the report showed), at the os/open level, so the
  stages' own code paths (atomic writes, lock files, deletions, folder creation) all meet it.

Either way: exit status 1, exactly one ERROR line naming a path under the results tree, no
traceback, and no file under a final name changed.
"""

from __future__ import annotations

import builtins
import errno
import io
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from labelwise import cli

pytestmark = pytest.mark.faults

CONFIG = {
    "data": {"source": "mnist5k", "labels": [0, 1]},
    "models": {"wcgan": {"width": 4, "latent_dim": 8, "batch_size": 8}},
    "budget": {"iterations": 4, "checkpoint_every": 2},
    "evaluation": {"samples_per_label": 5, "inception": "off", "classifier_epochs": 1, "batch_size": 5},
    "figures": {"grid_columns": 5},
    "runtime": {"device": "cpu", "progress_seconds": 1},
}
DS = "mnist5k"
# stage arguments -> the folder (under results/mnist5k) that holds what it writes
STAGES = {
    "prepare": ([], "shards"),
    "train": (["--model", "wcgan", "--label", "0"], "wcgan/generators"),
    "sample": (["--model", "wcgan", "--label", "0"], "wcgan/samples"),
    "grid": (["--model", "wcgan"], "figures"),
    "classifier": ([], "classifier"),
    "evaluate": (["--model", "wcgan"], "stats"),
    "curves": (["--model", "wcgan"], "figures"),
    "compare": ([], "figures"),
    "table": ([], "paper"),
}
ORDER = ["prepare", "train", "sample", "classifier", "evaluate", "grid", "curves", "compare", "table"]


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """A results tree where every stage has run once (both labels trained and sampled)."""
    work = tmp_path_factory.mktemp("unwritable")
    (work / "config.yaml").write_text(yaml.safe_dump(CONFIG))
    for stage in ORDER:
        labels = ["0", "1"] if stage in ("train", "sample") else [None]
        for label in labels:
            args, _ = STAGES[stage]
            if label is not None:
                args = [*args[:-1], label]
            assert (
                cli.main([stage, "--config", str(work / "config.yaml"), "--results", str(work / "results"), *args]) == 0
            )
    return work


def snapshot(tree: Path, stage: str) -> dict:
    """Every file's time stamp and size; prepare removes meta.json first on purpose (an interrupted
    data stage must not look finished), so it is left out there."""
    return {
        p: (p.stat().st_mtime_ns, p.stat().st_size)
        for p in tree.rglob("*")
        if p.is_file() and not (stage == "prepare" and p.name == "meta.json")
    }


# --- a real obstacle, in a real process ------------------------------------------------------------


@pytest.mark.parametrize("stage", ORDER)
def test_stage_with_its_output_folder_blocked_is_one_line(finished, tmp_path, stage):
    work = tmp_path / "work"
    shutil.copytree(finished, work)
    # No checkpoints: a train run must write again (its folder is blocked too: the lock file's folder).
    shutil.rmtree(work / "results" / DS / "wcgan" / "checkpoints")
    args, folder = STAGES[stage]
    target = work / "results" / DS / folder
    shutil.rmtree(target)
    target.write_text("a file where the stage's output folder belongs\n")
    if stage == "train":
        (work / "results" / DS / "wcgan" / "checkpoints").write_text("in the way\n")
    before = snapshot(work / "results", stage)
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "labelwise.cli",
            stage,
            "--config",
            str(work / "config.yaml"),
            "--results",
            str(work / "results"),
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 1, r.stderr[-2000:]
    errors = [line for line in r.stderr.splitlines() if " ERROR " in line]
    assert len(errors) == 1 and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert str(work / "results" / DS) in errors[0] and "rerun" in errors[0], errors[0]
    assert snapshot(work / "results", stage) == before  # nothing under a final name changed
    assert not [p for p in (work / "results").rglob(".*tmp-*")]


# --- a read-only file system, simulated in process ----------------------------------------------------


def _under(path, root: str) -> bool:
    try:
        p = os.path.abspath(os.fsdecode(path))
    except TypeError:
        return False  # a file descriptor
    return p == root or p.startswith(root + os.sep)


def read_only(monkeypatch, tree: Path) -> list[str]:
    """Make `tree` behave as a read-only mount for this process: every os-level call that would create,
    change or remove something under it raises OSError(EROFS).  Returns the paths refused."""
    root, refused = os.path.abspath(tree), []

    def refuse(path):
        refused.append(os.fsdecode(path))
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), os.fsdecode(path))

    def guard(name, path_args=(0,), writes=lambda *a, **k: True):
        original = getattr(os, name)

        def guarded(*args, **kwargs):
            if writes(*args, **kwargs) and any(_under(args[i], root) for i in path_args if i < len(args)):
                refuse(next(args[i] for i in path_args if _under(args[i], root)))
            return original(*args, **kwargs)

        monkeypatch.setattr(os, name, guarded)

    write_flags = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
    guard("open", writes=lambda path, flags, *a, **k: bool(flags & write_flags))
    for name in ("mkdir", "unlink", "remove", "rmdir", "truncate", "utime", "chmod"):
        guard(name)
    for name in ("replace", "rename", "link", "symlink"):
        guard(name, path_args=(0, 1))

    real_open = builtins.open

    def guarded_open(file, mode="r", *args, **kwargs):
        if any(c in mode for c in "wax+") and not isinstance(file, int) and _under(file, root):
            refuse(file)
        return real_open(file, mode, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", guarded_open)
    monkeypatch.setattr(io, "open", guarded_open)
    return refused


@pytest.mark.parametrize("stage", ORDER)
def test_stage_on_a_read_only_results_tree_is_one_line(finished, tmp_path, monkeypatch, capsys, stage):
    work = tmp_path / "work"
    shutil.copytree(finished, work)
    shutil.rmtree(work / "results" / DS / "wcgan" / "checkpoints")  # train must write, not only resume
    args, folder = STAGES[stage]
    shutil.rmtree(work / "results" / DS / folder)  # as before the stage's first run: its folder is made too
    before = snapshot(work / "results", stage)
    refused = read_only(monkeypatch, work / "results")
    capsys.readouterr()
    code = cli.main([stage, "--config", str(work / "config.yaml"), "--results", str(work / "results"), *args])
    monkeypatch.undo()
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if " ERROR " in line]
    assert code == 1 and len(errors) == 1 and "Traceback" not in err, err[-2000:]
    assert refused, "the stage wrote nothing: the test proves nothing"
    assert "Read-only file system" in errors[0] and str(work / "results") in errors[0], errors[0]
    assert "\n" not in errors[0] and "rerun" in errors[0]
    assert snapshot(work / "results", stage) == before
