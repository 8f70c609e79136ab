"""Storage faults: a checkpoint or output write that fails (disk full) keeps what was there, leaves no
temporary file, and ends in one LabelwiseError naming the file and the fix; a rerun loses nothing.

Two ways to fill the disk: an injected ENOSPC (everywhere), and a real, tiny tmpfs (only where the
tests may mount one, i.e. as root; skipped otherwise).  The real one is what showed that torch.save
and h5py report a full disk as a cryptic RuntimeError (labelwise.io's docstring).
"""

from __future__ import annotations

import errno
import subprocess
from pathlib import Path

import matplotlib
import numpy as np
import pytest
import torch
from conftest import train_cmd

import labelwise.io
from labelwise.errors import LabelwiseError
from labelwise.images import read_images, write_images
from labelwise.train import Budget, Outputs, load_generator, train_label
from labelwise.train.checkpoint import list_checkpoints

pytestmark = pytest.mark.faults

BUDGET = dict(iterations=8, checkpoint_every=2)


def outputs(root: Path) -> Outputs:
    return Outputs(generator=root / "g.pt", log=root / "log.csv", checkpoints=root / "ckpt")


def hidden(folder: Path) -> list[str]:
    """Temporary files (atomic_path names them `.<stem>.tmp-<pid><suffix>`; the checkpoint folder's
    `.lock` is not one)."""
    return sorted(p.name for p in folder.rglob(".*.tmp-*")) if folder.exists() else []


def same_weights(a: Path, b: Path) -> bool:
    x, y = load_generator(a)[0].state_dict(), load_generator(b)[0].state_dict()
    return x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)


class _FullDisk:
    """A file whose disk fills up halfway through the first write."""

    def __init__(self, f):
        self.f = f

    def write(self, data):
        data = memoryview(data).cast("B")
        self.f.write(data[: len(data) // 2])
        self.f.flush()
        raise OSError(errno.ENOSPC, "No space left on device")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.f.close()


def fail_nth_write(monkeypatch, n: int, match: str) -> dict:
    """Make the n-th file labelwise.io opens for writing whose name contains `match` run out of space."""
    calls = {"n": 0}

    def fake_open(path, mode="r", *args, **kwargs):
        f = open(path, mode, *args, **kwargs)
        if "w" in mode and match in Path(path).name:
            calls["n"] += 1
            if calls["n"] == n:
                return _FullDisk(f)
        return f

    monkeypatch.setattr(labelwise.io, "open", fake_open, raising=False)
    return calls


@pytest.mark.parametrize("how", ["write-halfway", "torch.save"])
def test_failed_checkpoint_write_keeps_previous_one_clear_error(tmp_path, make_shard, tiny_settings, monkeypatch, how):
    shard = make_shard(label=1)
    out = outputs(tmp_path / "run")
    if how == "write-halfway":  # the third checkpoint (iteration 6) hits a full disk halfway
        fail_nth_write(monkeypatch, 3, ".ckpt-")
    else:  # the brief's injection: torch.save itself raises ENOSPC on its third call
        real_save, calls = torch.save, {"n": 0}

        def save(obj, f, *args, **kwargs):
            calls["n"] += 1
            if calls["n"] == 3:
                raise OSError(errno.ENOSPC, "No space left on device")
            return real_save(obj, f, *args, **kwargs)

        monkeypatch.setattr(torch, "save", save)
    with pytest.raises(LabelwiseError) as err:
        train_label(shard, "wcgan", tiny_settings, Budget(**BUDGET), 0, out, threads=1)
    msg = str(err.value)
    assert "\n" not in msg
    assert "checkpoint at iteration 6 not saved" in msg and str(out.checkpoints / "ckpt-000000006.pt") in msg
    assert "No space left on device" in msg and "free space" in msg
    assert f"the last good checkpoint {out.checkpoints / 'ckpt-000000004.pt'} is kept" in msg
    assert [i for i, _ in list_checkpoints(out.checkpoints)] == [4, 2]
    for _, path in list_checkpoints(out.checkpoints):
        torch.load(path, weights_only=True)  # intact
    assert hidden(out.checkpoints) == [] and not out.generator.exists() and not out.log.exists()

    monkeypatch.undo()  # space freed: the rerun resumes and ends where an uninterrupted run ends
    result = train_label(shard, "wcgan", tiny_settings, Budget(**BUDGET), 0, out, threads=1)
    assert result.resumed_from == 4
    straight = outputs(tmp_path / "straight")
    train_label(shard, "wcgan", tiny_settings, Budget(**BUDGET), 0, straight, threads=1)
    assert same_weights(out.generator, straight.generator)


def test_failed_generator_write_keeps_final_checkpoint(tmp_path, make_shard, tiny_settings, monkeypatch, caplog):
    shard = make_shard(label=2)
    out = outputs(tmp_path)
    fail_nth_write(monkeypatch, 1, ".g.tmp-")
    with pytest.raises(
        LabelwiseError, match=rf"{out.generator}: could not write it \(No space left on device\).*free space"
    ):
        train_label(shard, "wcgan", tiny_settings, Budget(**BUDGET), 0, out, threads=1)
    assert not out.generator.exists() and hidden(tmp_path) == []
    assert list_checkpoints(out.checkpoints)[0][0] == 8  # the work is kept
    monkeypatch.undo()
    result = train_label(shard, "wcgan", tiny_settings, Budget(**BUDGET), 0, out, threads=1)
    assert result.resumed_from == 8 and out.generator.exists() and out.log.exists()


# ----------------------------------------------------------------------------------- a real tmpfs


@pytest.fixture
def tiny_tmpfs(tmp_path):
    """Mount a tmpfs of a given size at a fresh folder (root only); unmounted afterwards."""
    mounted = []

    def mount(size_kib: int) -> Path:
        where = tmp_path / f"tmpfs{len(mounted)}"
        where.mkdir()
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size_kib}k", "tmpfs", str(where)], capture_output=True, text=True
        )
        if done.returncode != 0:
            pytest.skip(
                f"cannot mount a tmpfs here ({done.stderr.strip() or 'not root'}); "
                "the injected-ENOSPC tests cover the same code"
            )
        mounted.append(where)
        return where

    yield mount
    for where in mounted:
        subprocess.run(["umount", "-l", str(where)], check=False)


def test_real_full_disk_during_checkpoint_one_line_from_the_cli(tmp_path, make_shard, tiny_settings, tiny_tmpfs):
    shard = make_shard(label=0)
    # Room for two checkpoints (~130 KB each with these networks), not for the temporary third.
    disk = tiny_tmpfs(320)
    root = tmp_path / "run"
    cmd = train_cmd(shard, root, tiny_settings, BUDGET)
    cmd[cmd.index("--checkpoints") + 1] = str(disk)
    done = subprocess.run(cmd, capture_output=True, text=True)
    assert done.returncode == 1, done.stderr[-2000:]
    errors = [line for line in done.stderr.splitlines() if " ERROR " in line]
    assert len(errors) == 1 and "Traceback" not in done.stderr, done.stderr[-2000:]
    assert "not saved" in errors[0] and "No space left on device" in errors[0] and "free space" in errors[0]
    saved = [i for i, _ in list_checkpoints(disk)]
    assert len(saved) == 2 and f"the last good checkpoint {disk / f'ckpt-{saved[0]:09d}.pt'} is kept" in errors[0]
    assert hidden(disk) == [] and not (root / "g.pt").exists() and not (root / "log.csv").exists()

    subprocess.run(["mount", "-o", "remount,size=4m", str(disk)], check=True)  # space freed
    out = Outputs(generator=root / "g.pt", log=root / "log.csv", checkpoints=disk)
    result = train_label(shard, "wcgan", tiny_settings, Budget(**BUDGET), 0, out, label=0, threads=1)
    assert result.resumed_from == saved[0]
    straight = outputs(tmp_path / "straight")
    train_label(shard, "wcgan", tiny_settings, Budget(**BUDGET), 0, straight, label=0, threads=1)
    assert same_weights(out.generator, straight.generator)


def _figure(path):
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from labelwise.plots import save_figure

    fig, ax = plt.subplots()
    ax.imshow(np.random.default_rng(0).random((300, 300)))
    save_figure(fig, [path])


WRITERS = {
    "shard.h5": lambda p: write_images(
        p, np.random.default_rng(0).integers(0, 256, (200, 1, 28, 28), dtype=np.uint8), label=0
    ),
    "generator.pt": lambda p: labelwise.io.save_torch({"w": torch.randn(60000)}, p),
    "metrics.json": lambda p: labelwise.io.write_json(p, {"x": "y" * 200_000}),
    "figure.png": _figure,
}


@pytest.mark.parametrize("name", list(WRITERS))
def test_every_writer_on_a_real_full_disk(tiny_tmpfs, name):
    """HDF5, torch, JSON and figure writers on a 64 KiB file system: one LabelwiseError, nothing left."""
    disk = tiny_tmpfs(64)
    with pytest.raises(LabelwiseError, match=rf"{disk / name}: could not write it \(No space left on device\)"):
        WRITERS[name](disk / name)
    assert list(disk.iterdir()) == []


def test_shard_written_in_memory_reads_back(tmp_path):
    """write_images builds the HDF5 file in memory (for the full-disk errors above): same content back."""
    images = np.random.default_rng(1).integers(0, 256, (5, 3, 16, 16), dtype=np.uint8)
    write_images(tmp_path / "s.h5", images, label=4, class_name="four")
    back, attrs = read_images(tmp_path / "s.h5")
    assert np.array_equal(back, images) and attrs["label"] == 4 and attrs["class_name"] == "four"
