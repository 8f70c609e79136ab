"""The real Snakefile on a tiny config: end to end, nothing redone on a rerun, config errors up front."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import h5py
import pytest
import yaml

from conftest import REPO

TINY = {
    "data": {"source": "mnist5k", "labels": [0, 7]},
    "models": {"wcgan": {"width": 4, "latent_dim": 8, "batch_size": 8},
               "dccgan": {"width": 4, "latent_dim": 8, "batch_size": 8}},
    "budget": {"iterations": 6, "checkpoint_every": 3},
    "evaluation": {"samples_per_label": 5},
    "figures": {"grid_columns": 5},
    "runtime": {"device": "cpu", "progress_seconds": 1},
}


def snakemake(workdir: Path, config: dict, *args: str) -> subprocess.CompletedProcess:
    (workdir / "config.yaml").write_text(yaml.safe_dump(config))
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(workdir),
           "--configfile", str(workdir / "config.yaml"), "--cores", "2", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("pipeline")
    result = snakemake(workdir, TINY)
    assert result.returncode == 0, result.stderr[-3000:]
    return workdir


@pytest.mark.e2e
def test_end_to_end_outputs(finished_run):
    ds = finished_run / "results" / "mnist5k"
    assert len(list((ds / "shards").glob("*.h5"))) == 10  # mnist5k is sharded whole, once
    for model in ("wcgan", "dccgan"):
        for label in (0, 7):
            assert (ds / model / "generators" / f"{label}.pt").stat().st_size > 0
            log = (ds / model / "train_logs" / f"{label}.csv").read_text().splitlines()
            assert log[0].startswith("iteration,wall_seconds") and log[-1].startswith("6,")
            with h5py.File(ds / model / "samples" / f"{label}.h5") as f:
                assert f["images"].shape == (5, 1, 28, 28)
                assert f.attrs["label"] == label and f.attrs["class_name"] == str(label)
        for ext in ("png", "pdf"):
            assert (ds / "figures" / f"samples_{model}.{ext}").stat().st_size > 1000
        train_log = (finished_run / "logs" / "mnist5k" / "train" / model / "7.log").read_text()
        assert "it/s ETA" in train_log  # per-job progress lines


@pytest.mark.e2e
def test_rerun_has_nothing_to_do(finished_run):
    result = snakemake(finished_run, TINY, "--dry-run")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Nothing to be done" in result.stdout + result.stderr


@pytest.mark.e2e
def test_evaluation_change_does_not_retrain(finished_run):
    config = dict(TINY, evaluation={"samples_per_label": 6})
    result = snakemake(finished_run, config, "--dry-run")
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-3000:]
    assert "sample " in out and "rule train" not in out and "rule prepare" not in out


@pytest.mark.parametrize(
    "change, key",
    [
        ({"models": {"wcgan": {}, "stylegan": {}}}, "config key models: unknown model 'stylegan'"),
        ({"budget": {"iterations": -5}}, "config key budget.iterations: -5 is less than the minimum of 1"),
        ({"budget": {"iterations": 10, "minutes": -1}}, "config key budget.minutes"),
        ({"data": {"source": "mnist5k", "labels": [3, 12]}}, "config key data.labels: [12] do not exist in mnist5k"),
        ({"models": {"wcgan": {"lr": "fast"}}}, "config key models.wcgan.lr: 'fast' is not of type 'number'"),
        ({"data": {"source": "imagefolder", "root": "/nonexistent/folder"}}, "/nonexistent/folder"),
    ],
)
def test_bad_config_fails_before_any_job(tmp_path, change, key):
    result = snakemake(tmp_path, dict(TINY, **change), "--dry-run")
    assert result.returncode != 0
    assert key in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "results").exists()


def test_cli_lists_every_stage():
    out = subprocess.run([sys.executable, "-m", "labelwise.cli", "--help"], capture_output=True, text=True, check=True).stdout
    for stage in ("prepare", "train", "sample", "grid"):
        assert stage in out
