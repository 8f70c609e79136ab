"""Case b: K labels trained packed in one batched computation vs K separate single-label runs.

All variants train the same K mnist5k labels for the same N iterations each with the configured
mnist5k CPU settings, on the same 2 cores, as worker processes (benchmarks/cases/train_worker.py)
whose start-up is excluded (the clock starts when all of a variant's workers have imported
torch and labelwise).  Every variant trains through `labelwise.train.train_job`:

* reference "separate 2 procs x 1 thread": what the pipeline does with `--cores 2`,
  runtime.threads 1 and runtime.labels_per_job 1 — two processes at a time, each training its half
  of the labels one after the other, one job (K=1) per label;
* "packed 1 proc x 2 threads": one job of all K labels using both cores;
* "packed 2 procs x 1 thread": two jobs of K/2 labels each (the grouped-convolution kernel,
  runtime.packed_kernel's choice on the CPU), and the same with the batched-GEMM kernel
  ("..., bmm kernel"); the ratio of the two is recorded as `bmm_vs_grouped`;
* "... channels_last": the same with channels_last=True, and "separate ... channels_last": the
  one-label jobs in channels_last.  The memory format alone speeds the step up (case a.options),
  so the effect of packing within channels_last is the ratio of these two, recorded as
  `packing_effect_channels_last`.

Ratio = packed wall time / separate wall time (below 1: packed is faster; speedup = 1/ratio).
"""

from __future__ import annotations

import json
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from harness import compare

NAME = "packed"
DESCRIPTION = "K labels packed in one job (one batched computation) vs K one-label jobs, same cores"
WORKER = Path(__file__).with_name("train_worker.py")


def _run_workers(ctx, specs: list[dict]) -> float:
    procs = []
    try:
        for spec in specs:
            shutil.rmtree(spec["root"], ignore_errors=True)
            procs.append(
                subprocess.Popen(
                    [sys.executable, str(WORKER), json.dumps(spec)],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    text=True,
                    cwd=ctx.repo,
                )
            )
        for p in procs:
            line = p.stdout.readline()
            if line.strip() != "ready":
                raise RuntimeError(f"benchmark worker failed to start: {line!r}")
        t0 = time.perf_counter()
        for p in procs:
            p.stdin.write("go\n")
            p.stdin.flush()
        for p in procs:
            out, _ = p.communicate()
            if p.returncode != 0 or "done" not in out:
                raise RuntimeError(f"benchmark worker failed (exit {p.returncode})")
        return time.perf_counter() - t0
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()


def run(ctx) -> list:
    model = "wcgan"
    settings = ctx.config["models"][model]
    ks = (2,) if ctx.quick else (10,)
    iterations = 1 if ctx.quick else 2
    rows = []
    for k in ks:
        labels = list(range(k))
        shards = [str(ctx.shard(label)) for label in labels]

        def spec(tag, mode, part, threads, channels_last=False, kernel="grouped"):
            return {
                "mode": mode,
                "shards": [shards[i] for i in part],
                "labels": [labels[i] for i in part],
                "model": model,
                "settings": settings,
                "iterations": iterations,
                "checkpoint_every": 100,
                "threads": threads,
                "channels_last": channels_last,
                "packed_kernel": kernel,
                "root": str(ctx.tmp / f"packed-{tag}-{part[0]}"),
            }

        halves = [list(range(0, k, 2)), list(range(1, k, 2))]
        variants = {
            "packed 1 proc x 2 threads": [spec("p12", "packed", list(range(k)), 2)],
            "packed 2 procs x 1 thread": [spec("p21", "packed", h, 1) for h in halves],
            "packed 2 procs x 1 thread, bmm kernel": [spec("p21bmm", "packed", h, 1, kernel="bmm") for h in halves],
        }
        if not ctx.quick:
            variants["packed 2 procs x 1 thread, channels_last"] = [spec("p21cl", "packed", h, 1, True) for h in halves]
            variants["separate 2 procs x 1 thread, channels_last"] = [
                spec("sepcl", "separate", h, 1, True) for h in halves
            ]
        reference = [spec("sep", "separate", h, 1) for h in halves]
        new = compare(
            f"b.packed/K={k}",
            ("separate 2 procs x 1 thread", lambda: _run_workers(ctx, reference)),
            {name: (lambda s=s: _run_workers(ctx, s)) for name, s in variants.items()},
            repeats=ctx.repeats(3),
            log=ctx.log,
            notes={name: f"{k} labels x {iterations} iterations, {model}" for name in variants},
        )
        for row in new:
            row.extra = {
                "labels": k,
                "iterations_per_label": iterations,
                "model": model,
                "label_iterations_per_s": k * iterations / row.candidate_median_s,
                "reference_label_iterations_per_s": k * iterations / row.reference_median_s,
            }
        by_name = {row.candidate: row for row in new}
        bmm, grouped = by_name["packed 2 procs x 1 thread, bmm kernel"], by_name["packed 2 procs x 1 thread"]
        bmm.extra["bmm_vs_grouped"] = statistics.median(p / q for p, q in zip(bmm.candidate_s, grouped.candidate_s))
        bmm.note += f"; vs grouped kernel: {bmm.extra['bmm_vs_grouped']:.3f}"
        if "separate 2 procs x 1 thread, channels_last" in by_name:
            cl_packed = by_name["packed 2 procs x 1 thread, channels_last"]
            cl_separate = by_name["separate 2 procs x 1 thread, channels_last"]
            effect = statistics.median(p / q for p, q in zip(cl_packed.candidate_s, cl_separate.candidate_s))
            cl_packed.extra["packing_effect_channels_last"] = effect
            cl_packed.note += f"; vs separate channels_last: {effect:.3f}"
        rows += new
    return rows
