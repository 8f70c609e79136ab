"""The GPU benchmarks on a machine without one: benchmarks/run.py's gpu and engine cases
(docs/benchmarks.md, g and h) are skipped without a CUDA device unless asked for, and their whole code
paths run end to end on the CPU with tiny sizes (`--device cpu --quick`); benchmarks/gpu_check.py's
--cpu-smoke runs every section, and benchmarks/gpu_session.sh's steps fit its stated total time."""

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
        "batch indices drawn on CPU, copied each critic step",
        "images on host, batch copied each step",
    ]
    expected = []
    for model in ("wcgan", "dccgan"):
        expected += [
            (f"g.packed/{model}/K={k}", name)
            for name in (
                f"packed: 1 job of {k} labels",
                "packed, channels_last",
                f"separate: {k} processes at once",
            )
        ]
        expected += [
            (f"g.packed-steady/{model}/K={k}", name)
            for name in (f"packed: 1 job of {k} labels", "packed, channels_last")
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
            assert row["reference"] == f"separate: {k} one-label jobs in turn"
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


def _engine_quick(tmp_path, **env) -> tuple[subprocess.CompletedProcess, dict, Path]:
    """`run.py engine --device cpu --quick` with `env` set, rows written as they come to partial.json."""
    partial = tmp_path / "partial.json"
    keep = ("LABELWISE_BENCH_DEVICE", "LABELWISE_BENCH_PARTIAL", "LABELWISE_BENCH_ENGINE_BUDGET_S")
    environment = {k: v for k, v in os.environ.items() if k not in keep}
    proc = subprocess.run(
        [sys.executable, str(RUN), "engine", "--device", "cpu", "--quick", "--out", str(tmp_path)],
        cwd=REPO,
        env={**environment, "LABELWISE_BENCH_PARTIAL": str(partial), **env},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, f"stdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-5000:]}"
    return proc, json.loads((tmp_path / "latest-quick.json").read_text()), partial


ENGINE_VARIANTS = ("wcgan", "dccgan+aug+ema", "dccgan")
ENGINE_CONFIGURATIONS = [  # the CPU's rows: every kernel/layout/flag/precision, no CUDA graph
    f"grouped {layout} {p}{flag}"
    for layout in ("NCHW", "NHWC")
    for p in ("bf16", "fp32")
    for flag in ("", ", cudnn.benchmark")
] + ["bmm bf16", "bmm fp32", "bmm fp32, TF32"]


@pytest.mark.slow
def test_engine_case_runs_on_cpu_quick(tmp_path):
    """Case h on the CPU with tiny networks: every (model, K, configuration) row, run with the backend
    switches it names, against the matmul ceiling of its precision; EMA timed where the model has it."""
    proc, result, partial = _engine_quick(tmp_path)
    assert result["skipped"] == [], result["skipped"]
    rows = {(r["case"], r["candidate"]): r for r in result["rows"]}
    expected = {(f"h.engine/{v}/K={k}", c) for v in ENGINE_VARIANTS for k in (1, 2) for c in ENGINE_CONFIGURATIONS}
    assert set(rows) == expected
    flops = {}
    for (_case, candidate), row in rows.items():
        e = row["extra"]
        assert e["label_iterations_per_s"] > 0 and e["flops_per_label_iteration"] > 0
        assert e["iterations_per_sample"] >= 1 and len(e["seconds_per_iteration_samples"]) == row["repeats"] == 2
        # Each row ran with the switches it names (and the next row's are its own again).
        assert e["backend"]["cudnn.benchmark"] == e["runtime_cudnn_benchmark"] == ("cudnn.benchmark" in candidate)
        assert e["backend"]["cuda.matmul.allow_tf32"] == e["runtime_matmul_tf32"] == ("TF32" in candidate)
        # bf16 rows against the bf16 matmul rate, fp32 rows against fp32 with TF32 off, measured in this run.
        ceiling = "bf16 matmul" if e["runtime_precision"] == "bf16" else "fp32 matmul (TF32 off)"
        assert e["ceiling"] == ceiling and row["reference"].startswith(ceiling + " n=256 (")
        rate = e["matmul_flops_per_s"]["bf16" if e["runtime_precision"] == "bf16" else "fp32"]
        assert math.isclose(row["reference_median_s"], e["flops_per_label_iteration"] / rate, rel_tol=1e-9)
        assert math.isclose(e["fraction_of_ceiling"], 1.0 / row["ratio"], rel_tol=1e-9)
        assert (e["ema_update_ms"] is not None) == (e["variant"] == "dccgan+aug+ema")
        flops.setdefault(e["model"], set()).add(e["flops_per_label_iteration"])
        assert f"engine: {e['variant']} K={e['labels']} {candidate}: " in proc.stdout
        assert f"| {e['variant']} | {e['labels']} | {candidate} |" in proc.stdout  # the Markdown table
    # Counted once per model (augmentation and EMA are elementwise, not counted).
    assert {m: len(v) for m, v in flops.items()} == {"wcgan": 1, "dccgan": 1}
    assert result["machine"]["cuda"] is False
    # Written as it went: the partial file holds every row too.
    assert len(json.loads(partial.read_text())["rows"]) == len(expected)


def test_engine_case_stops_starting_rows_when_its_budget_is_spent(tmp_path):
    """With no time left, every row is listed as skipped with the reason and the command still ends well."""
    proc, result, _ = _engine_quick(tmp_path, LABELWISE_BENCH_ENGINE_BUDGET_S="0")
    assert result["rows"] == []
    reasons = {s["reason"] for s in result["skipped"]}
    assert reasons == {"time budget of 0 s spent ($LABELWISE_BENCH_ENGINE_BUDGET_S)"}
    assert len(result["skipped"]) == len(ENGINE_VARIANTS) * 2 * len(ENGINE_CONFIGURATIONS)
    assert f"engine: {len(result['skipped'])} rows not run" in proc.stdout


# --------------------------------------------------------------------------- benchmarks/gpu_check.py

GPU_CHECK = REPO / "benchmarks" / "gpu_check.py"
CUDA_ONLY = ("graph_equals_eager", "no_host_sync", "forced_capture_failure", "eager_vs_graph")


def test_gpu_check_cpu_smoke_runs_every_section(tmp_path):
    """Every section's code path, tiny, on the CPU: results written per measurement and per section
    (JSON lines and Markdown), the CUDA-only checks saying so, the others with their answers."""
    proc = subprocess.run(
        [sys.executable, str(GPU_CHECK), "--cpu-smoke", "--out", str(tmp_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, f"stdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-5000:]}"
    lines = [json.loads(line) for line in (tmp_path / "gpu_check.jsonl").read_text().splitlines()]
    sections = {r["section"]: r for r in lines if "status" in r}
    assert list(sections) == [
        "environment",
        "graph_equals_eager",
        "no_host_sync",
        "forced_capture_failure",
        "kernel_choice",
        "eager_vs_graph",
        "bf16_vs_fp32",
        "profile",
    ]
    for name, record in sections.items():
        assert record["status"].startswith("skipped: no CUDA" if name in CUDA_ONLY else "ok"), (name, record["status"])
    items = {}
    for r in lines:
        if "item" in r:
            items.setdefault(r["section"], []).append(r["item"])
    # Two eager runs of one job on the CPU end identically: losses, weights, EMA, every stream.
    for case in items["graph_equals_eager"] + items["forced_capture_failure"]:
        assert case["bitwise_identical"] and case["streams_equal"] and case["streams_draw_afterwards"], case
        assert case["captured"] is False
    assert [c["host_sync"] for c in items["no_host_sync"]] == [False] * 4
    kernel_rows = sections["kernel_choice"]["result"]["rows"]
    assert len(kernel_rows) == 2 * 11 and all(r["ms_per_iteration"] > 0 for r in kernel_rows)
    assert set(sections["kernel_choice"]["result"]["fastest"]) == {
        f"{m} {p}" for m in ("wcgan", "dccgan+aug+ema") for p in ("bf16", "fp32")
    }
    graph_rows = sections["eager_vs_graph"]["result"]["rows"]
    assert [(r["labels"], r["cuda_graph"]) for r in graph_rows] == [(k, False) for k in (1, 2, 3)] * 4
    for model in ("wcgan", "dccgan+aug+ema"):
        done = sections["bf16_vs_fp32"]["result"]["models"][model]
        assert set(done["drift_from_fp32"]) == {"bf16", "fp32, bmm kernel"}
        assert all(len(run["curves"]["g_loss"]) == 6 for run in done["runs"].values())
    profile = sections["profile"]["result"]
    assert profile["top"] and math.isclose(sum(profile["shares_by_kind"].values()), 1.0, rel_tol=1e-6)
    markdown = (tmp_path / "gpu_check.md").read_text()
    assert all(f"## {name}" in markdown for name in sections) and "## Summary" in markdown


@pytest.mark.skipif(torch.cuda.is_available(), reason="the refusal is for machines without CUDA")
def test_gpu_check_without_cuda_names_the_smoke_test(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(GPU_CHECK), "--out", str(tmp_path)], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 2
    assert proc.stdout.strip() == (
        "gpu_check: no CUDA device here; run it on a GPU machine, or add --cpu-smoke to test its code path"
    )


def test_gpu_check_comparison_catches_a_difference(tmp_path):
    """The graph-vs-eager verdict fails on a weight off by more than rounding or on a stream one draw ahead."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        import gpu_check
    finally:
        sys.path.remove(str(REPO / "benchmarks"))
    check = gpu_check.Check(tmp_path, smoke=True)
    runtime = gpu_check.Runtime("grouped")
    reference, _ = gpu_check.run_job(check, "wcgan", runtime, 2, 2)
    same, _ = gpu_check.run_job(check, "wcgan", runtime, 2, 2)
    assert gpu_check.compare_runs(reference, same, "fp32")["bitwise_identical"]

    weight = next(k for k, v in same["generators"][1].items() if v.is_floating_point())
    same["generators"][1][weight] = same["generators"][1][weight] * 1.005
    verdict = gpu_check.compare_runs(reference, same, "fp32")
    assert not verdict["within_tolerance"] and verdict["generator_max_diff_per_label"][0] == 0.0
    assert gpu_check.compare_runs(reference, same, "bf16")["within_tolerance"]  # 0.5% is within bf16's rounding

    ahead = [(cpu, dev.clone()) for cpu, dev in reference["streams"]]
    generator = torch.Generator().manual_seed(0)
    generator.set_state(ahead[0][0])
    torch.rand(1, generator=generator)
    ahead[0] = (generator.get_state(), ahead[0][1])
    assert not gpu_check.compare_runs(reference, {**reference, "streams": ahead}, "fp32")["streams_equal"]


def test_gpu_session_steps_fit_the_stated_total():
    """Each step of benchmarks/gpu_session.sh runs under a timeout, and the timeouts fit the total
    (default 540 s: below the device tool's 600 s per command), with room for the set-up."""
    for total in (None, 420):
        proc = subprocess.run(
            ["bash", str(REPO / "benchmarks" / "gpu_session.sh"), "--plan", *([str(total)] if total else [])],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert proc.returncode == 0, proc.stderr
        limits = {
            line.split()[1]: int(line.split()[3].rstrip("s"))
            for line in proc.stdout.splitlines()
            if line.startswith("step ")
        }
        assert list(limits) == ["gpu_check", "engine", "pipeline"]
        kill_after = int(proc.stdout.splitlines()[-2].split()[1].rstrip("s"))  # TERM, then KILL this much later
        stated = int(proc.stdout.splitlines()[-1].split()[1].rstrip("s"))
        assert stated == (total or 540) and stated <= 570
        assert sum(limits.values()) + len(limits) * kill_after <= stated - 10
