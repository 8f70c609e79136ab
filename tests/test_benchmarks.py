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
    proc = subprocess.run([sys.executable, str(RUN), *args, "--out", str(out)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)
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
    options = ["channels_last", "bf16 autocast", "channels_last + bf16 autocast", "cudnn.benchmark",
               "batch indices drawn on CPU (train_label's way)", "images on host, batch copied each step"]
    expected = []
    for model in ("wcgan", "dccgan"):
        expected += [(f"g.packed/{model}/K={k}", name) for name in (f"packed: 1 train_packed of {k} labels",
                                                                     "packed, channels_last",
                                                                     f"separate: {k} processes at once")]
        expected += [(f"g.packed-steady/{model}/K={k}", name) for name in
                     (f"packed: 1 train_packed of {k} labels", "packed, channels_last")]
        expected += [(f"g.options/{model}", name) for name in options]
    expected.append(("g.options/wcgan", "bf16 autocast, gradient penalty fp32"))
    assert sorted(rows) == sorted(expected)
    for (case, candidate), row in rows.items():
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
