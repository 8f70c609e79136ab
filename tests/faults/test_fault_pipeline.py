"""Faults seen through the real Snakefile: two runs on one directory at once; shards damaged after the
data stage (truncated, corrupt, another label's, another resolution, empty, rewritten: each checked
in process, four of them through the Snakefile too); an image folder with an empty class.  Each
failure is one line in the job's log, a non-zero exit, and no output (nor temporary file) for the
label concerned.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml
from conftest import TINY, snakemake, snakemake_command, snakemake_env
from PIL import Image

from labelwise.data import read_shard
from labelwise.errors import LabelwiseError
from labelwise.images import read_images, write_images
from labelwise.train import Budget, Outputs, load_generator, train_label

pytestmark = pytest.mark.faults

LABELS = [0, 1, 2, 3, 4, 5, 6]
CONFIG = dict(
    TINY,
    data={"source": "mnist5k", "labels": LABELS},
    models={"wcgan": TINY["models"]["wcgan"]},
    budget={"iterations": 6, "checkpoint_every": 3},
)
DS = Path("results/mnist5k")


def snakemake_process(workdir: Path, *args: str, log: Path) -> subprocess.Popen:
    """conftest.snakemake, started in the background (its config.yaml already written)."""
    cmd = snakemake_command(workdir, workdir / "config.yaml", *args)
    return subprocess.Popen(cmd, stdout=log.open("w"), stderr=subprocess.STDOUT, env=snakemake_env())


@pytest.fixture(scope="module")
def concurrent_runs(tmp_path_factory):
    """Run A trains label 0 (data stage included); run B starts on the same directory while A holds its lock.

    A's training job is held behind a gate (the launcher prefix waits for a file) until B has ended, so A
    is certain to be running when B starts however fast or slow this machine is."""
    workdir = tmp_path_factory.mktemp("concurrent")
    gate = workdir / "b-has-ended"
    (workdir / "gate.sh").write_text(
        f'for i in $(seq 6000); do [ -e "{gate}" ] && break; sleep 0.05; done\nexec "$@"\n'
    )
    config_a = dict(CONFIG, runtime=dict(CONFIG["runtime"], launcher=f"sh {workdir / 'gate.sh'}"))
    (workdir / "config.yaml").write_text(yaml.safe_dump(config_a))
    target = str(DS / "wcgan/generators/0.pt")
    a_log = workdir.parent / f"{workdir.name}-a.log"
    a = snakemake_process(workdir, target, log=a_log)
    locks = workdir / ".snakemake" / "locks"
    deadline = time.monotonic() + 120
    while not (locks.is_dir() and any(locks.iterdir())) and a.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert a.poll() is None, "run A ended before run B could start: " + a_log.read_text()[-2000:]
    b = snakemake(workdir, config_a, target)
    a_still_running = a.poll() is None
    gate.touch()
    a.wait(timeout=600)
    return {
        "workdir": workdir,
        "a_rc": a.returncode,
        "a_log": a_log.read_text(),
        "b": b,
        "a_still_running": a_still_running,
    }


@pytest.mark.e2e
def test_second_run_on_same_directory_is_refused_first_completes(concurrent_runs):
    b = concurrent_runs["b"]
    assert b.returncode != 0
    assert "Directory cannot be locked" in b.stdout + b.stderr
    assert "rule prepare" not in b.stdout + b.stderr  # B ran nothing
    assert concurrent_runs["a_still_running"], "B must have been refused while A was running"
    assert concurrent_runs["a_rc"] == 0, concurrent_runs["a_log"][-3000:]
    ds = concurrent_runs["workdir"] / DS
    for label in range(10):  # every shard whole and as meta.json describes it
        images, _ = read_shard(ds / "meta.json", label)
        assert images.shape[1:] == (1, 28, 28)
    gen, info = load_generator(ds / "wcgan/generators/0.pt")
    assert info["iterations"] == 6 and all(np.isfinite(v.numpy()).all() for v in gen.state_dict().values())
    assert not list(ds.rglob(".*.tmp-*"))
    locks = concurrent_runs["workdir"] / ".snakemake" / "locks"
    assert not locks.exists() or not any(locks.iterdir())  # A released its lock


# ------------------------------------------------------------------------- shards damaged after prepare


def _truncate(path: Path, other: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _flip_pixels(path: Path, other: Path) -> None:
    with h5py.File(path, "r+") as f:  # the stored checksum is left as it was
        f["images"][0] = 255 - f["images"][0]


def _other_label(path: Path, other: Path) -> None:
    shutil.copyfile(other, path)


def _other_resolution(path: Path, other: Path) -> None:
    """A self-consistent shard of this label, but 32×32 where meta.json says 28×28."""
    images, attrs = read_images(path)
    padded = np.pad(images, ((0, 0), (0, 0), (2, 2), (2, 2)))
    write_images(path, padded, **{k: v for k, v in attrs.items() if k not in ("count", "sha256")} | {"resolution": 32})


def _empty(path: Path, other: Path) -> None:
    _, attrs = read_images(path)
    write_images(
        path, np.zeros((0, 1, 28, 28), np.uint8), **{k: v for k, v in attrs.items() if k not in ("count", "sha256")}
    )


def _rewritten(path: Path, other: Path) -> None:
    """Self-consistent (its own checksum matches), but not the shard meta.json recorded."""
    images, attrs = read_images(path)
    write_images(path, images[:-1], **{k: v for k, v in attrs.items() if k not in ("count", "sha256")})


# label -> (damage, what the one-line error must say)
DAMAGE = {
    1: (_truncate, "unreadable or corrupt HDF5 file"),
    2: (_flip_pixels, "checksum mismatch"),
    3: (_other_label, "attribute label=7 but 3 was expected"),
    4: (_other_resolution, "attribute resolution=32 but 28 was expected"),
    5: (_empty, "holds no images for label 5"),
    6: (_rewritten, "checksum does not match the one meta.json recorded"),
}
FIX = "delete it and rerun the"
# Through the Snakefile: HDF5 damage, a checksum mismatch, a disagreement with meta.json, an empty shard.
PIPELINE_DAMAGE = [1, 2, 4, 5]


@pytest.mark.parametrize("label", sorted(DAMAGE), ids=lambda k: DAMAGE[k][0].__name__.strip("_"))
def test_damaged_shard_stops_training_with_the_fix(tmp_path, tiny_settings, label):
    """In process: train_label checks a prepared shard against its meta.json, not only its own checksum."""
    from labelwise.data import prepare_dataset

    prepare_dataset("mnist5k", tmp_path, labels=[label, 7])
    shard = tmp_path / "shards" / f"{label}.h5"
    damage, message = DAMAGE[label]
    damage(shard, tmp_path / "shards" / "7.h5")
    out = Outputs(generator=tmp_path / "g.pt", log=tmp_path / "log.csv", checkpoints=tmp_path / "ckpt")
    with pytest.raises(LabelwiseError) as err:
        train_label(shard, "wcgan", tiny_settings, Budget(iterations=2), 0, out, label=label, threads=1)
    assert str(shard) in str(err.value) and message in str(err.value) and FIX in str(err.value)
    assert not out.generator.exists() and not out.log.exists() and not out.checkpoints.exists()


@pytest.mark.e2e
def test_damaged_shards_fail_their_train_jobs_in_the_pipeline(concurrent_runs):
    """After a finished data stage, damage four shards and ask for their generators: four failed jobs."""
    workdir = concurrent_runs["workdir"]
    shards = workdir / DS / "shards"
    for label in PIPELINE_DAMAGE:
        DAMAGE[label][0](shards / f"{label}.h5", shards / "7.h5")
    targets = [str(DS / f"wcgan/generators/{k}.pt") for k in PIPELINE_DAMAGE]
    result = snakemake(workdir, CONFIG, "--keep-going", *targets)
    assert result.returncode != 0
    assert "rule prepare" not in result.stdout + result.stderr  # the data stage was not redone behind our back
    for label in PIPELINE_DAMAGE:
        message = DAMAGE[label][1]
        log = (workdir / f"logs/mnist5k/train/wcgan/{label}.log").read_text()
        errors = [line for line in log.splitlines() if " ERROR " in line]
        assert len(errors) == 1 and "Traceback" not in log, log[-2000:]
        assert f"shards/{label}.h5" in errors[0] and message in errors[0] and FIX in errors[0], errors[0]
        assert not (workdir / DS / f"wcgan/generators/{label}.pt").exists()
        assert not (workdir / DS / f"wcgan/train_logs/{label}.csv").exists()
        assert not (workdir / DS / f"wcgan/checkpoints/{label}").exists()
    assert not list((workdir / DS).rglob(".*.tmp-*"))
    assert (workdir / DS / "wcgan/generators/0.pt").exists()  # the good label's output is untouched


# ------------------------------------------------------------------------- an image folder with problems


@pytest.mark.e2e
def test_imagefolder_empty_class_fails_the_data_stage_in_the_pipeline(tmp_path):
    """An empty class folder among the selected labels: that label's preparation job fails naming it
    and writes no shard, and no meta.json is written (the other label's shard, if its job ran, is not
    trusted without it: faults/test_fault_prepare.py).  (A junk file beside good images is skipped
    with a warning and listed in meta.json: tests/test_data.py::test_imagefolder.)"""
    root = tmp_path / "images"
    rng = np.random.default_rng(0)
    for name in ("a.png", "b.png"):
        (root / "ant").mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)).save(root / "ant" / name)
    (root / "ant" / "notes.txt").write_text("not an image")
    (root / "bee").mkdir()  # an empty class
    (root / "bee" / ".DS_Store").write_bytes(b"\0")  # hidden files are not samples either
    config = dict(CONFIG, data={"source": "imagefolder", "root": str(root), "resolution": 16, "labels": [0, 1]})
    work = tmp_path / "work"
    work.mkdir()
    failed = snakemake(work, config, "--until", "prepare")
    assert failed.returncode != 0
    log = (work / "logs/imagefolder/prepare/1.log").read_text()  # label 1's own job
    errors = [line for line in log.splitlines() if " ERROR " in line]
    assert len(errors) == 1 and "Traceback" not in log, log[-2000:]
    assert (
        str(root / "bee") in errors[0] and "no readable image for label 1" in errors[0] and "data.labels" in errors[0]
    )
    assert not (work / "results/imagefolder/meta.json").exists()
    written = (
        sorted(p.relative_to(work / "results") for p in (work / "results").rglob("*") if p.is_file())
        if (work / "results").exists()
        else []
    )
    assert all(str(p) in ("imagefolder/shards/0.h5", "imagefolder/benchmarks/prepare/0.tsv") for p in written), written
