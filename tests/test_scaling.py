"""Weak scaling (rules/scaling.smk, labelwise/scaling.py): the summary maths from synthetic job
records, the figure, the timed job wrapper, and the real Snakefile with k = 1, 2 on two cores."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
from conftest import TINY, snakemake

from labelwise import scaling


def record(k, slot, start, end, *, launched=None, host="node1", device="cpu", gpu_uuid=None, train=None, label=None):
    return {
        "k": k,
        "slot": slot,
        "label": slot if label is None else label,
        "model": "wcgan",
        "launched": launched,
        "start": start,
        "end": end,
        "seconds": end - start,
        "train_seconds": (end - start) / 2 if train is None else train,
        "iterations": 10,
        "host": host,
        "device": device,
        "gpu_uuid": gpu_uuid,
        "gpu_name": None,
        "cuda_visible_devices": None,
        "threads": 1,
    }


def write_records(directory: Path, records) -> list[Path]:
    paths = []
    for r in records:
        path = directory / f"k{r['k']}" / f"job{r['slot']}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(r))
        paths.append(path)
    return paths


# --- summary maths -------------------------------------------------------------------------------------


def test_makespan_runs_from_the_first_launch_to_the_last_end():
    stats = scaling.group_stats(
        [
            record(2, 0, start=100.5, end=110.0, launched=100.0),
            record(2, 1, start=101.0, end=112.0, launched=100.2),
        ]
    )
    assert stats["k"] == 2 and stats["n_jobs"] == 2
    assert stats["makespan_s"] == pytest.approx(12.0)  # 112.0 - 100.0 (launched, not started)
    assert stats["mean_job_s"] == pytest.approx((9.5 + 11.0) / 2)
    assert stats["max_job_s"] == pytest.approx(11.0)
    assert stats["start_spread_s"] == pytest.approx(0.5)
    assert stats["overlap"] is True and stats["max_concurrent"] == 2
    assert stats["hosts"] == 1 and stats["gpus"] == 0 and stats["device_kind"] == "cpu"


def test_without_a_launch_time_the_start_counts():
    stats = scaling.group_stats([record(1, 0, start=5.0, end=8.0)])
    assert stats["makespan_s"] == pytest.approx(3.0)


@pytest.mark.parametrize(
    "intervals, overlap, most",
    [
        ([(0, 10), (1, 11), (2, 12)], True, 3),
        ([(0, 10), (10, 20)], False, 1),  # back to back: touching is not overlapping
        ([(0, 10), (5, 15), (12, 20)], False, 2),  # pairs overlap, never all three
        ([(0, 4), (0, 4)], True, 2),
    ],
)
def test_overlap_means_all_k_jobs_ran_at_one_instant(intervals, overlap, most):
    k = len(intervals)
    stats = scaling.group_stats([record(k, i, s, e) for i, (s, e) in enumerate(intervals)])
    assert stats["overlap"] is overlap
    assert stats["max_concurrent"] == most
    assert (scaling.concurrency_problem(dict(stats, efficiency=1.0)) is None) is overlap


def test_efficiency_is_t1_over_tk():
    groups = [
        scaling.group_stats([record(4, i, 0.0, 20.0, train=8.0) for i in range(4)]),
        scaling.group_stats([record(1, 0, 0.0, 10.0, train=4.0)]),
        scaling.group_stats([record(2, i, 0.0, 12.5, train=5.0) for i in range(2)]),
    ]
    rows = scaling.summary_rows(groups)
    assert [r["k"] for r in rows] == [1, 2, 4]
    assert [r["efficiency"] for r in rows] == pytest.approx([1.0, 0.8, 0.5])
    assert [r["train_efficiency"] for r in rows] == pytest.approx([1.0, 0.8, 0.5])
    assert {r["base_k"] for r in rows} == {1}


def test_efficiency_base_is_the_smallest_k_when_1_is_not_measured():
    rows = scaling.summary_rows(
        [
            scaling.group_stats([record(8, i, 0.0, 16.0) for i in range(8)]),
            scaling.group_stats([record(2, i, 0.0, 8.0) for i in range(2)]),
        ]
    )
    assert [(r["k"], r["base_k"], r["efficiency"]) for r in rows] == [(2, 2, 1.0), (8, 2, 0.5)]


def test_gpu_groups_count_distinct_gpus_and_hosts():
    on_two = [
        record(2, 0, 0, 5, host="a", device="cuda:0", gpu_uuid="GPU-1"),
        record(2, 1, 0, 5, host="b", device="cuda:0", gpu_uuid="GPU-2"),
    ]
    stats = scaling.group_stats(on_two)
    assert stats["device_kind"] == "cuda" and stats["hosts"] == 2 and stats["gpus"] == 2
    assert scaling.concurrency_problem(stats) is None
    shared = [
        record(2, 0, 0, 5, device="cuda:0", gpu_uuid="GPU-1"),
        record(2, 1, 0, 5, device="cuda:0", gpu_uuid="GPU-1"),
    ]
    assert "shared 1 GPU" in scaling.concurrency_problem(scaling.group_stats(shared))


def test_records_of_two_groups_are_not_one_group():
    with pytest.raises(ValueError, match="several groups"):
        scaling.group_stats([record(1, 0, 0, 1), record(2, 0, 0, 1)])


def test_missing_jobs_are_reported():
    stats = scaling.group_stats([record(4, i, 0, 5) for i in range(3)])
    assert "3 job records for k = 4" in scaling.concurrency_problem(stats)


def test_summary_and_jobs_csv_round_trip(tmp_path):
    paths = write_records(
        tmp_path,
        [
            record(1, 0, 0.0, 10.0, launched=-0.5),
            record(2, 0, 20.0, 31.0, launched=19.9),
            record(2, 1, 20.1, 30.0, launched=19.9, label=7),
        ],
    )
    scaling.write_summary(paths, tmp_path / "summary.csv", tmp_path / "jobs.csv")
    with open(tmp_path / "summary.csv", newline="") as f:
        raw = list(csv.DictReader(f))
    assert tuple(raw[0]) == scaling.SUMMARY_COLUMNS
    rows = scaling.read_summary(tmp_path / "summary.csv")
    assert [r["k"] for r in rows] == [1, 2]
    assert rows[0]["makespan_s"] == pytest.approx(10.5) and rows[1]["makespan_s"] == pytest.approx(11.1)
    assert rows[1]["efficiency"] == pytest.approx(10.5 / 11.1, abs=1e-4)
    assert rows[1]["overlap"] is True and rows[1]["n_jobs"] == 2 and rows[1]["threads"] == 1
    with open(tmp_path / "jobs.csv", newline="") as f:
        jobs = list(csv.DictReader(f))
    assert [(j["k"], j["slot"], j["label"]) for j in jobs] == [("1", "0", "0"), ("2", "0", "0"), ("2", "1", "7")]


# --- the figure -------------------------------------------------------------------------------------


def summary(*groups):
    return scaling.summary_rows([scaling.group_stats(g) for g in groups])


@pytest.mark.parametrize("device", ["cpu", "cuda:0"])
def test_figure_is_written_as_png_and_pdf(tmp_path, device):
    rows = summary(
        [record(1, 0, 0, 10, device=device, gpu_uuid="g0")],
        [record(2, i, 0, 11, device=device, gpu_uuid=f"g{i}") for i in range(2)],
        [record(4, i, 0, 13, device=device, gpu_uuid=f"g{i}") for i in range(4)],
    )
    outputs = [tmp_path / "weak_scaling.png", tmp_path / "weak_scaling.pdf"]
    scaling.scaling_figure(rows, outputs, title="test")
    assert outputs[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and outputs[0].stat().st_size > 5000
    assert outputs[1].read_bytes()[:5] == b"%PDF-" and outputs[1].stat().st_size > 1000


def test_figure_warns_about_a_group_that_did_not_run_concurrently(tmp_path):
    import matplotlib.figure

    texts = []
    original = matplotlib.figure.Figure.text

    def spy(self, x, y, s, *args, **kwargs):
        texts.append(s)
        return original(self, x, y, s, *args, **kwargs)

    rows = summary([record(1, 0, 0, 10)], [record(2, 0, 0, 10), record(2, 1, 10, 20)])
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(matplotlib.figure.Figure, "text", spy)
        scaling.scaling_figure(rows, [tmp_path / "f.png"])
    assert any("k = 2" in t and "never all ran at once" in t for t in texts)
    assert (tmp_path / "f.png").stat().st_size > 5000


def test_figure_with_a_single_k(tmp_path):
    scaling.scaling_figure(summary([record(1, 0, 0, 10)]), [tmp_path / "one.png"])
    assert (tmp_path / "one.png").stat().st_size > 5000


# --- the timed job wrapper ------------------------------------------------------------------------------


def train_args(shard, scratch, settings, label=0):
    return [
        "--model",
        "wcgan",
        "--label",
        str(label),
        "--settings",
        json.dumps(settings),
        "--shard",
        str(shard),
        "--generator",
        str(scratch / "generator.pt"),
        "--log",
        str(scratch / "train_log.csv"),
        "--checkpoints",
        str(scratch / "checkpoints"),
        "--device",
        "cpu",
        "--threads",
        "1",
    ]


def test_job_wrapper_times_labelwise_train_from_scratch(tmp_path, make_shard, tiny_settings):
    shard = make_shard(label=3)
    scratch = tmp_path / "scratch"
    (scratch / "checkpoints").mkdir(parents=True)
    (scratch / "checkpoints" / "stale").write_text("another run's checkpoint")
    settings = {"model": tiny_settings, "budget": {"iterations": 4, "minutes": None, "checkpoint_every": 2}, "seed": 0}
    out = tmp_path / "k1" / "job0.json"
    code = scaling.main(
        [
            "job",
            "--record",
            str(out),
            "--k",
            "1",
            "--slot",
            "0",
            "--launched",
            "123.5",
            "--",
            *train_args(shard, scratch, settings, label=3),
        ]
    )
    assert code == 0
    rec = json.loads(out.read_text())
    assert rec["k"] == 1 and rec["slot"] == 0 and rec["label"] == 3 and rec["model"] == "wcgan"
    assert rec["launched"] == 123.5 and rec["start"] < rec["end"]
    assert rec["seconds"] == pytest.approx(rec["end"] - rec["start"])
    assert rec["iterations"] == 4 and 0 < rec["train_seconds"] <= rec["seconds"]
    assert rec["device"] == "cpu" and rec["host"] and rec["threads"] == 1
    assert not (scratch / "checkpoints" / "stale").exists()  # never resumed from another run
    assert (scratch / "generator.pt").exists()


def test_job_wrapper_writes_no_record_when_training_fails(tmp_path, make_shard, tiny_settings):
    shard = make_shard(label=3)
    settings = {"model": tiny_settings, "budget": {"iterations": 2, "minutes": None, "checkpoint_every": 2}, "seed": 0}
    out = tmp_path / "job0.json"
    code = scaling.main(
        [
            "job",
            "--record",
            str(out),
            "--k",
            "1",
            "--slot",
            "0",
            "--",
            *train_args(shard, tmp_path / "scratch", settings, label=5),
        ]
    )  # shard holds label 3
    assert code == 1 and not out.exists()


# --- the Snakefile -------------------------------------------------------------------------------------

SCALING = dict(
    TINY, models={"wcgan": TINY["models"]["wcgan"]}, scaling={"ks": [1, 2], "iterations": 10, "checkpoint_every": 5}
)
FIGURES = ["results/mnist5k/figures/weak_scaling.png", "results/mnist5k/figures/weak_scaling.pdf"]


def test_paper_target_includes_the_scaling_study_and_k_may_exceed_the_labels(tmp_path):
    config = dict(SCALING, scaling={"ks": [1, 2, 4], "iterations": 10})  # 2 labels, 4 jobs: labels cycle
    result = snakemake(tmp_path, config, "--dry-run", "paper")
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    for path in FIGURES:
        assert path in out
    assert "results/mnist5k/scaling/wcgan/k4/job3.json" in out
    # group 4 waits for group 2, group 2 for group 1: one group at a time
    assert "results/mnist5k/scaling/wcgan/k2/done" in out and "results/mnist5k/scaling/wcgan/k1/done" in out
    table = {r.split()[0]: r.split()[1] for r in out.splitlines() if len(r.split()) == 2 and r.split()[1].isdigit()}
    assert table["scaling_train"] == "7" and table["scaling_group_done"] == "2"


def test_no_scaling_when_ks_is_empty(tmp_path):
    result = snakemake(tmp_path, dict(SCALING, scaling={"ks": []}), "--dry-run", "paper")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "scaling_train" not in result.stdout


def test_scaling_model_must_be_configured(tmp_path):
    result = snakemake(tmp_path, dict(SCALING, scaling={"model": "dccgan"}), "--dry-run")
    assert result.returncode != 0
    assert "config key scaling.model: 'dccgan' is not one of the configured per-label models" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.e2e
def test_weak_scaling_end_to_end_on_two_cores(tmp_path):
    result = snakemake(tmp_path, SCALING, *FIGURES)  # --cores 2
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    for path in FIGURES:
        assert (tmp_path / path).stat().st_size > 1000
    base = tmp_path / "results/mnist5k/scaling/wcgan"
    rows = scaling.read_summary(base / "summary.csv")
    assert [(r["k"], r["n_jobs"]) for r in rows] == [(1, 1), (2, 2)]
    for r in rows:
        assert r["makespan_s"] > 0 and r["max_job_s"] <= r["makespan_s"] + 1e-3 and r["hosts"] == 1
        assert r["device_kind"] == "cpu" and r["threads"] == 1
    assert rows[0]["efficiency"] == 1.0
    assert rows[1]["efficiency"] == pytest.approx(rows[0]["makespan_s"] / rows[1]["makespan_s"], rel=1e-3)
    # the two k=2 jobs ran at the same time ...
    assert rows[1]["overlap"] is True and rows[1]["max_concurrent"] == 2
    jobs = [json.loads((base / f"k2/job{i}.json").read_text()) for i in range(2)]
    assert max(j["start"] for j in jobs) < min(j["end"] for j in jobs)
    assert sorted(j["label"] for j in jobs) == [0, 7] and all(j["iterations"] == 10 for j in jobs)
    # ... and only after the k=1 job had finished: the groups never interleave
    k1 = json.loads((base / "k1/job0.json").read_text())
    assert min(j["launched"] for j in jobs) > k1["end"]
    # every group's checkpoints are its own (k=2 did not resume k=1's label-0 run)
    assert (base / "scratch/k1/0/checkpoints").is_dir() and (base / "scratch/k2/0/checkpoints").is_dir()
    assert "resuming" not in (tmp_path / "logs/mnist5k/scaling/wcgan/k2/job0.log").read_text()
    rerun = snakemake(tmp_path, SCALING, "--dry-run", *FIGURES)
    assert "Nothing to be done" in rerun.stdout + rerun.stderr
    assert math.isfinite(rows[1]["train_efficiency"])
