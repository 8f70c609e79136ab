"""benchmarks/run.py's gpu case (docs/benchmarks.md, g): skipped without a CUDA device unless asked
for, and its whole code path run end to end on the CPU with tiny sizes (`gpu --device cpu --quick`)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
RUN = REPO / "benchmarks" / "run.py"
SKIP_LINE = "gpu: skipped (no CUDA device; use --device cpu to smoke-test the code path)"


def _bench(args: list[str], out: Path) -> tuple[subprocess.CompletedProcess, dict]:
    env = {k: v for k, v in os.environ.items() if k not in ("LABELWISE_BENCH_DEVICE", "LABELWISE_BENCH_PARTIAL")}
    proc = subprocess.run(
        [sys.executable, str(RUN), *args, "--out", str(out)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, f"stdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-5000:]}"
    latest = out / ("latest-quick.json" if "--quick" in args else "latest.json")
    return proc, json.loads(latest.read_text())


@pytest.mark.skipif(torch.cuda.is_available(), reason="the skip path is for machines without CUDA")
def test_gpu_case_is_skipped_without_cuda(tmp_path):
    proc, result = _bench(["gpu"], tmp_path)
    assert SKIP_LINE in proc.stdout.splitlines()
    assert result["rows"] == []
    assert result["skipped"] == [{"case": "gpu", "reason": "no CUDA device"}]


@pytest.mark.slow
def test_gpu_case_runs_on_cpu_quick(tmp_path):
    proc, result = _bench(["gpu", "--device", "cpu", "--quick"], tmp_path)
    assert result["skipped"] == [], result["skipped"]
    rows = {(r["case"], r["candidate"]): r for r in result["rows"]}
    k = 2  # --quick: 2 labels
    options = [
        "channels_last",
        "bf16 autocast",
        "channels_last + bf16 autocast",
        "cudnn.benchmark",
        "batch indices drawn on CPU (train_label's way)",
        "images on host, batch copied each step",
    ]
    expected = []
    for model in ("wcgan", "dccgan"):
        expected += [
            (f"g.packed/{model}/K={k}", name)
            for name in (
                f"packed: 1 train_packed of {k} labels",
                "packed, channels_last",
                f"separate: {k} processes at once",
            )
        ]
        expected += [
            (f"g.packed-steady/{model}/K={k}", name)
            for name in (f"packed: 1 train_packed of {k} labels", "packed, channels_last")
        ]
        expected += [(f"g.options/{model}", name) for name in options]
    expected.append(("g.options/wcgan", "bf16 autocast, gradient penalty fp32"))
    assert sorted(rows) == sorted(expected)
    for (case, _candidate), row in rows.items():
        assert row["repeats"] == 2 and len(row["candidate_s"]) == len(row["reference_s"]) == 2
        assert row["extra"]["device_info"]["device"] == "cpu"
        if not case.startswith("g.packed-steady/"):  # a difference of two tiny timings may be negative
            assert row["candidate_median_s"] > 0 and row["reference_median_s"] > 0 and row["ratio"] > 0
        if case.startswith("g.packed/"):
            # Every variant wrote each label's generator with the reference's tensors and iteration count.
            assert row["extra"]["outputs_identical_shapes"] is True
            assert math.isfinite(row["extra"]["max_abs_generator_weight_diff_vs_reference"])
            assert row["reference"] == f"separate: {k} x train_label in turn"
    for name in ("bf16 autocast", "bf16 autocast, gradient penalty fp32"):
        diffs = rows[("g.options/wcgan", name)]["extra"]["bf16_vs_fp32_rel_diff_same_batch"]
        assert set(diffs) == {"loss", "neg_wasserstein", "gradient_penalty"}
    assert rows[("g.options/dccgan", "channels_last")]["extra"]["left_out"]  # torch.compile: not in the CPU smoke test
    assert f"g.packed/wcgan/K={k}" in proc.stdout  # the table


ENGINE_SKIP_LINE = "engine: skipped (no CUDA device; use --device cpu --quick to smoke-test the code path)"


@pytest.mark.skipif(torch.cuda.is_available(), reason="the skip path is for machines without CUDA")
def test_engine_case_is_skipped_without_cuda(tmp_path):
    proc, result = _bench(["engine"], tmp_path)
    assert ENGINE_SKIP_LINE in proc.stdout.splitlines()
    assert result["rows"] == [] and result["skipped"] == [{"case": "engine", "reason": "no CUDA device"}]


@pytest.mark.slow
def test_engine_case_runs_on_cpu_quick(tmp_path):
    """Issue 11's one GPU command, on the CPU with tiny networks: every (model, K, precision, kernel)
    row, its label-iterations/s, counted FLOPs and fraction of the bf16 matmul rate, partial results."""
    partial = tmp_path / "partial.json"
    env_before = os.environ.get("LABELWISE_BENCH_PARTIAL")
    os.environ["LABELWISE_BENCH_PARTIAL"] = str(partial)
    try:
        proc = subprocess.run(
            [sys.executable, str(RUN), "engine", "--device", "cpu", "--quick", "--out", str(tmp_path)],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=600,
        )
    finally:
        if env_before is None:
            del os.environ["LABELWISE_BENCH_PARTIAL"]
        else:
            os.environ["LABELWISE_BENCH_PARTIAL"] = env_before
    assert proc.returncode == 0, f"stdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-5000:]}"
    result = json.loads((tmp_path / "latest-quick.json").read_text())
    assert result["skipped"] == [], result["skipped"]
    rows = {(r["case"], r["candidate"]): r for r in result["rows"]}
    expected = {
        (f"g.engine/{m}/K={k}", f"{kernel} {p}")
        for m in ("wcgan", "dccgan")
        for k in (1, 2)
        for p in ("fp32", "bf16")
        for kernel in ("grouped", "bmm")
    }
    assert set(rows) == expected
    flops = {}
    for (_case, candidate), row in rows.items():
        e = row["extra"]
        assert e["label_iterations_per_s"] > 0 and e["flops_per_label_iteration"] > 0
        # The fraction of the ceiling is the inverse of the time ratio against the matmul rate.
        assert math.isclose(e["fraction_of_bf16_matmul"], 1.0 / row["ratio"], rel_tol=1e-9)
        assert math.isclose(
            row["reference_median_s"], e["flops_per_label_iteration"] / e["bf16_matmul_flops_per_s"], rel_tol=1e-9
        )
        flops.setdefault(e["model"], set()).add(e["flops_per_label_iteration"])
        assert f"engine: {e['model']} K={e['labels']} {candidate}: " in proc.stdout
    assert all(len(v) == 1 for v in flops.values())  # counted once per model, not per row
    assert flops["wcgan"] != flops["dccgan"]
    # Written as it went: the partial file holds every row too.
    assert len(json.loads(partial.read_text())["rows"]) == len(expected)
