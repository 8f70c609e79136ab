"""The real Snakefile on a tiny config: end to end, nothing redone on a rerun, config errors up front."""

from __future__ import annotations

import copy
import json
import subprocess
import sys

import h5py
import numpy as np
import pytest
from conftest import TINY, snakemake


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("pipeline")
    result = snakemake(workdir, TINY)
    assert result.returncode == 0, result.stderr[-3000:]
    (workdir / "first_run.log").write_text(result.stdout + result.stderr)
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
def test_metrics_for_every_model_with_inception_marked_skipped(finished_run):
    ds = finished_run / "results" / "mnist5k"
    for model in ("wcgan", "dccgan"):
        metrics = json.loads((ds / model / "metrics.json").read_text())
        clf = metrics["classifier"]
        assert clf["status"] == "ok" and clf["held_out_accuracy"] > 0.8  # real MNIST digits are easy
        assert set(clf["label_accuracy"]["per_label"]) == {"0", "7"}
        assert 0.0 <= clf["label_accuracy"]["pooled"] <= 1.0
        assert clf["fid"]["pooled"] > 0 and set(clf["fid"]["per_label"]) == {"0", "7"}
        assert metrics["inception"]["status"] == "skipped"
        assert "evaluation.inception_weights" in metrics["inception"]["reason"]
        assert metrics["protocol"]["n_generated"] == {"0": 5, "7": 5}
        rows = (ds / model / "metrics.csv").read_text().splitlines()
        assert rows[0].startswith("label,class_name") and len(rows) == 3
    for name in ("metrics_comparison", "training_curves_wcgan", "training_curves_dccgan"):
        for ext in ("png", "pdf"):
            assert (ds / "figures" / f"{name}.{ext}").stat().st_size > 1000


@pytest.mark.e2e
def test_real_statistics_computed_once_for_all_models(finished_run):
    log = (finished_run / "first_run.log").read_text()
    # One statistics job (every label, classifier space), one classifier, one evaluation per model reading them.
    assert log.count("rule real_stats:") == 1
    assert log.count("rule classifier:") == 1
    assert log.count("rule evaluate:") == 2
    stats = sorted(p.name for p in (finished_run / "results/mnist5k/stats/classifier").iterdir())
    assert stats == ["0.npz", "7.npz"]


@pytest.mark.e2e
def test_rerun_has_nothing_to_do(finished_run):
    result = snakemake(finished_run, TINY, "--dry-run")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Nothing to be done" in result.stdout + result.stderr


def planned_jobs(workdir, config) -> dict[str, int]:
    """Rule -> number of jobs a dry run would execute (Snakemake's job table)."""
    result = snakemake(workdir, config, "--dry-run", "--quiet", "rules")
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    rows = [line.split() for line in result.stdout.splitlines()]
    return {r[0]: int(r[1]) for r in rows if len(r) == 2 and r[1].isdigit() and r[0] not in ("total", "all")}


def changed(**sections) -> dict:
    config = copy.deepcopy(TINY)
    for key, value in sections.items():
        config[key] = {**config.get(key, {}), **value} if isinstance(value, dict) else value
    return config


FIGURES_OF_ONE_MODEL = {"sample_grid": 1, "training_curves": 1, "metrics_comparison": 1}
FIGURES_OF_BOTH_MODELS = {"sample_grid": 2, "training_curves": 2, "metrics_comparison": 1}


@pytest.mark.e2e
@pytest.mark.parametrize(
    "what, config, expected",
    [
        (
            "an evaluation key",
            changed(evaluation={"samples_per_label": 6}),
            {"sample": 2, "evaluate": 2, "sample_grid": 2, "metrics_comparison": 1},
        ),
        (
            "a wcgan training key",
            changed(models={**TINY["models"], "wcgan": {**TINY["models"]["wcgan"], "lr": 3e-4}}),
            {"train": 2, "sample": 1, "evaluate": 1, **FIGURES_OF_ONE_MODEL},
        ),
        (
            "one more label",
            changed(data={"source": "mnist5k", "labels": [0, 3, 7]}),
            {
                "train": 2,
                "sample": 2,
                "real_stats": 1,
                "evaluate": 2,
                "sample_grid": 2,
                "training_curves": 2,
                "metrics_comparison": 1,
            },
        ),
        (
            "a figure style key",
            changed(figures={"dpi": 100}),
            {"sample_grid": 2, "training_curves": 2, "metrics_comparison": 1},
        ),
        ("a runtime key", changed(runtime={"device": "cpu", "progress_seconds": 3, "threads": 2}), {}),
        # How a job computes, up to rounding: never a rerun (config.yaml's header, README "What a change reruns").
        ("runtime.channels_last", changed(runtime={**TINY["runtime"], "channels_last": True}), {}),
        ("runtime.packed_kernel", changed(runtime={**TINY["runtime"], "packed_kernel": "bmm"}), {}),
        ("runtime.cuda_graph", changed(runtime={**TINY["runtime"], "cuda_graph": "off"}), {}),
        # bf16 changes the results: a param of the training jobs, which retrain, and all after them.
        (
            "runtime.precision",
            changed(runtime={**TINY["runtime"], "precision": "bf16"}),
            {"train": 4, "sample": 2, "evaluate": 2, **FIGURES_OF_BOTH_MODELS},
        ),
        # Regrouped training jobs (one per model and pack of labels): they rerun, find their final
        # checkpoints and rewrite the same generators, and what reads the generators follows.
        (
            "runtime.labels_per_job",
            changed(runtime={**TINY["runtime"], "labels_per_job": 2}),
            {"train_labels_0_7": 2, "sample": 2, "evaluate": 2, **FIGURES_OF_BOTH_MODELS},
        ),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_a_change_reruns_only_what_it_touches(finished_run, what, config, expected):
    assert planned_jobs(finished_run, config) == expected, what


@pytest.mark.e2e
def test_a_wcgan_key_leaves_dccgan_alone(finished_run):
    config = changed(models={**TINY["models"], "wcgan": {**TINY["models"]["wcgan"], "lr": 3e-4}})
    result = snakemake(finished_run, config, "--dry-run")
    jobs = [line for line in result.stdout.splitlines() if "wildcards:" in line]
    assert jobs and all("model=wcgan" in line for line in jobs if "model=" in line)


@pytest.mark.e2e
@pytest.mark.slow
def test_inception_metrics_appear_with_weights(tmp_path, random_inception_weights):
    """Random weights of the real layout stand in for the (unavailable) published ones.  A folder of
    eight 16×16 images per class keeps the real statistics to a few images (Inception runs at ~5
    images/s on this CPU; mnist5k's digit would be 500)."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        (tmp_path / "images" / name).mkdir(parents=True)
        for i in range(8):
            Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(
                tmp_path / "images" / name / f"{i}.png"
            )
    config = dict(
        TINY,
        data={"source": "imagefolder", "root": str(tmp_path / "images"), "resolution": 16, "labels": "all"},
        models={"wcgan": TINY["models"]["wcgan"]},
        evaluation={
            "samples_per_label": 10,
            "inception": "required",
            "inception_weights": str(random_inception_weights),
            "kid_subset_size": 5,
        },
    )
    result = snakemake(tmp_path, config)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((tmp_path / "results/imagefolder/wcgan/metrics.json").read_text())
    inc = metrics["inception"]
    assert inc["status"] == "ok"
    assert inc["fid"]["pooled"] > 0 and inc["fid"]["per_label"]["1"] > 0
    assert inc["is"]["mean"] >= 1.0 and inc["kid"]["mean"] is not None
    assert metrics["protocol"]["inception_weights"] == str(random_inception_weights)
    assert (tmp_path / "results/imagefolder/stats/inception/1.npz").exists()


def test_inception_required_without_weights_fails_with_the_fix(tmp_path):
    config = dict(
        TINY,
        data={"source": "mnist5k", "labels": [3]},
        models={"wcgan": TINY["models"]["wcgan"]},
        evaluation={"inception": "required"},
    )
    result = snakemake(tmp_path, config, "--until", "real_stats")
    assert result.returncode != 0
    log = (tmp_path / "logs/mnist5k/stats/inception.log").read_text()
    assert "evaluation.inception_weights" in log and "wget" in log
    assert "Traceback" not in log
    assert not (tmp_path / "results/mnist5k/stats/inception/3.npz").exists()


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
    out = subprocess.run(
        [sys.executable, "-m", "labelwise.cli", "--help"], capture_output=True, text=True, check=True
    ).stdout
    for stage in ("prepare", "train", "sample", "grid", "classifier", "evaluate", "curves", "compare", "table"):
        assert stage in out


@pytest.mark.e2e
def test_report_bundles_figures_and_metrics(finished_run):
    result = snakemake(finished_run, TINY, "--report", str(finished_run / "report.html"))
    assert result.returncode == 0, result.stderr[-3000:]
    html = (finished_run / "report.html").read_text(errors="replace")
    for name in ("samples_wcgan.png", "metrics_comparison.png", "training_curves_dccgan.png", "metrics.csv"):
        assert name in html
