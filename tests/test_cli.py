"""`labelwise` subcommands in-process: every stage of a tiny run without Snakemake, and the error
that says which stage to run first."""

from __future__ import annotations

import json

import h5py
import pytest
import torch
import yaml
from conftest import TINY_MODEL

from labelwise.cli import main
from labelwise.train.compute import label_iteration_flops

LABELS = (0, 7)


@pytest.fixture
def tiny_config(tmp_path):
    config = {
        "data": {"source": "mnist5k", "labels": list(LABELS)},
        # not in the papers' order; wcgan with issue 13's DiffAugment and generator average
        "models": {"cgan": dict(TINY_MODEL), "wcgan": dict(TINY_MODEL, augment="diffaugment", ema=0.99)},
        "budget": {"iterations": 4, "checkpoint_every": 2},
        "evaluation": {"samples_per_label": 5, "classifier_epochs": 1, "inception": "off"},
        "figures": {"grid_columns": 5, "dpi": 50},
        "runtime": {"device": "cpu", "threads": 1, "progress_seconds": 1},
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return ["--config", str(path), "--results", str(tmp_path / "results")]


def test_every_stage_without_snakemake(tmp_path, tiny_config):
    assert main(["prepare", *tiny_config]) == 0
    assert main(["train", *tiny_config, "--model", "cgan"]) == 0  # one conditional model of the selected labels
    for label in LABELS:
        assert main(["train", *tiny_config, "--model", "wcgan", "--label", str(label)]) == 0
        for model in ("wcgan", "cgan"):
            assert main(["sample", *tiny_config, "--model", model, "--label", str(label)]) == 0
    assert main(["classifier", *tiny_config]) == 0
    for model in ("wcgan", "cgan"):
        for stage in ("grid", "evaluate", "curves"):
            assert main([stage, *tiny_config, "--model", model]) == 0, (stage, model)
    for stage in ("compare", "table"):
        assert main([stage, *tiny_config]) == 0, stage

    ds = tmp_path / "results" / "mnist5k"
    # The single CGAN as its Snakemake job trains it: on labels 0 and 7 only, with their budgets summed.
    cgan = torch.load(ds / "cgan" / "generators" / "all.pt", weights_only=True)
    assert cgan["labels"] == [0, 7] and cgan["iterations"] == 8
    assert json.loads((ds / "cgan" / "metrics.json").read_text())["protocol"]["n_generated"] == {"0": 5, "7": 5}
    metrics = json.loads((ds / "wcgan" / "metrics.json").read_text())
    accuracy = metrics["classifier"]["label_accuracy"]["per_label"]
    assert set(accuracy) == {"0", "7"} and all(0 <= a <= 1 for a in accuracy.values())
    assert metrics["protocol"]["n_generated"] == {"0": 5, "7": 5}
    assert metrics["inception"]["status"] == "skipped"
    # Which generator was evaluated and what each label got from the budget (issue 13).
    training = metrics["training"]
    assert training["generator"] == "weight average (EMA)" and training["ema_decay"] == 0.99
    assert training["equal_budget"] == "iterations" and training["budget"]["iterations"] == 4
    assert {k: v["iterations"] for k, v in training["per_label"].items()} == {"0": 4, "7": 4}
    assert training["total"]["gflop"] == pytest.approx(8 * training["flops_per_iteration"] / 1e9)
    cgan_training = json.loads((ds / "cgan" / "metrics.json").read_text())["training"]
    assert cgan_training["generator"] == "trained weights" and cgan_training["one_network"]
    # Both labels' samples hold the one network's record: its totals are that network's, not twice them.
    assert cgan_training["total"]["iterations"] == 8 and {
        v["iterations"] for v in cgan_training["per_label"].values()
    } == {8}
    assert cgan_training["total"]["gflop"] == pytest.approx(8 * cgan_training["flops_per_iteration"] / 1e9)
    assert (ds / "wcgan" / "metrics.csv").read_text().splitlines()[0].startswith("label,class_name")
    assert sorted(p.name for p in (ds / "stats" / "classifier").iterdir()) == ["0.npz", "7.npz"]  # cached on demand
    assert not (ds / "stats" / "inception").exists()
    with h5py.File(ds / "wcgan" / "samples" / "7.h5") as f:
        assert f["images"].shape == (5, 1, 28, 28)
    for stem in ("samples_wcgan", "samples_cgan", "training_curves_wcgan", "metrics_comparison"):
        assert (ds / "figures" / f"{stem}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert (ds / "figures" / f"{stem}.pdf").read_bytes()[:5] == b"%PDF-"
    table = {ext: (ds / "paper" / f"metrics_table.{ext}").read_text() for ext in ("csv", "md", "tex")}
    for text in table.values():  # the papers' order, whatever the config's
        assert 0 < text.index("W-CGAN") < text.rindex("single CGAN")  # (the caption names it too)
    assert table["md"].startswith(
        "mnist5k: W-CGAN (per-label WGAN-GP) and single CGAN, 2 labels, 5 samples per label"
    )  # the configured models, only those
    header, wcgan_row = table["csv"].splitlines()[:2]
    assert "equal budget,iterations / label,GFLOP / label,train s / label,sampled generator" in header
    assert ",4 iterations,4," in wcgan_row and "EMA 0.99" in wcgan_row
    cgan_row = next(line for line in table["csv"].splitlines() if line.startswith("single CGAN"))
    assert ",4 iterations,8 (one network)," in cgan_row  # its GFLOP and seconds: shared out over the 2 labels


def test_evaluate_too_early_names_the_stage_to_run_first(tmp_path, tiny_config, capsys):
    ds = tmp_path / "results" / "mnist5k"
    expected = [
        (None, "run `labelwise prepare` first"),
        ("shards", "run `labelwise sample --model wcgan --label 0` first"),
        ("wcgan/samples", "run `labelwise classifier` first"),
    ]
    for made, hint in expected:
        if made:  # the check is for the files; their content is the later stages' business
            (ds / made).mkdir(parents=True)
            for label in LABELS:
                (ds / made / f"{label}.h5").touch()
        assert main(["evaluate", *tiny_config, "--model", "wcgan"]) == 1
        errors = [line for line in capsys.readouterr().err.splitlines() if "ERROR" in line]
        assert len(errors) == 1 and errors[0].endswith(hint), errors
    assert not (ds / "wcgan" / "metrics.json").exists()
    assert main(["compare", *tiny_config]) == 1
    assert "run `labelwise evaluate --model M` first" in capsys.readouterr().err


@pytest.mark.parametrize("labels", [[3], [3, 5]], ids=["one-label-job", "packed-job"])
def test_a_compute_capped_job_says_so_in_its_log_and_metrics(tmp_path, labels):
    """When budget.gflop, not budget.iterations, sets a job's iterations, its log's first and last
    lines and metrics.json's training section say so with both numbers, and fewer than 100
    iterations per label is a warning at the start naming budget.gflop (issue 21)."""
    flops = label_iteration_flops("wcgan", TINY_MODEL, 1, 32)  # mnist5k: 28 px padded to 32
    gflop = 3.5 * flops / 1e9  # buys 3 iterations, below the cap of 50
    config = {
        "data": {"source": "mnist5k", "labels": labels},
        "models": {"wcgan": dict(TINY_MODEL)},
        "budget": {"gflop": gflop, "iterations": 50, "checkpoint_every": 2},
        "evaluation": {"samples_per_label": 5, "classifier_epochs": 1, "inception": "off"},
        "runtime": {"device": "cpu", "threads": 1, "progress_seconds": 1},
    }
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    args = ["--config", str(tmp_path / "config.yaml"), "--results", str(tmp_path / "results")]
    log = tmp_path / "train.log"
    assert main(["prepare", *args]) == 0
    assert main(["train", *args, "--model", "wcgan", "--label", *map(str, labels), "--log-file", str(log)]) == 0
    for label in labels:
        assert main(["sample", *args, "--model", "wcgan", "--label", str(label)]) == 0
    assert main(["classifier", *args]) == 0 and main(["evaluate", *args, "--model", "wcgan"]) == 0

    statement = f"compute budget {gflop:g} GFLOP -> 3 iterations (cap 50)"
    lines = log.read_text().splitlines()
    assert lines[0].endswith(f"budget: {statement}"), lines[0]
    assert "WARNING" in lines[1] and "budget.gflop" in lines[1] and "only 3 iterations per label" in lines[1]
    assert "done: 3 iterations" in lines[-1] and f"stopped by the {statement}" in lines[-1], lines[-1]
    training = json.loads((tmp_path / "results" / "mnist5k" / "wcgan" / "metrics.json").read_text())["training"]
    assert training["budget_statement"] == statement and training["iterations_set_by"] == "gflop"
    assert training["budget"]["iterations_cap"] == 50 and training["budget"]["gflop"] == pytest.approx(gflop)
    assert {k: (v["iterations"], v["stopped_by"]) for k, v in training["per_label"].items()} == {
        str(k): (3, "gflop") for k in labels
    }
