"""The training engine's GPU check (issue 22): what to run first when a GPU is at hand, in one command.

    python3 benchmarks/gpu_check.py [--out DIR] [--budget-s 300] [--sections NAME ...]
    python3 benchmarks/gpu_check.py --cpu-smoke --out DIR     # every section's code path, tiny, on the CPU

Run from the repository root with a Python that has torch (a CUDA build), numpy, h5py and PyYAML
(nothing else: no installed labelwise, no jsonschema, no Snakemake).  At CIFAR-10 size
(presets/cifar10.yaml's networks, 32×32×3) it answers, section by section (`SECTIONS`, in order):

1. environment — torch, CUDA and cuDNN versions, the device, its memory, the TF32/cuDNN switches.
2. graph_equals_eager — does the CUDA-graph capture work, and does the captured iteration give what
   eager execution gives (per-iteration losses, the weights of every label's generator and critic,
   the EMA, and the final state of every label's random streams)?  W-CGAN fp32 and bf16 (bmm, K=3),
   DC-CGAN with config.yaml's DiffAugment and EMA (bf16, bmm, K=3) and one W-CGAN label (grouped,
   fp32), each against the same job run eagerly with the same capturable optimizers.
3. no_host_sync — does a steady-state eager iteration (and the EMA update after it) ever make the
   host wait for the GPU?  `torch.cuda.set_sync_debug_mode("error")` around one call, for one label
   (grouped, fp32), K=3 (bmm, bf16), DC-CGAN with DiffAugment + EMA and the conditional model.
4. forced_capture_failure — when capture fails (torch.cuda.graph monkeypatched to fail mid-capture,
   after the members' streams drew under it, and at the end of a complete capture), does the job stay
   eager without raising, say why in a warning, and go on exactly like a job that never tried (same
   losses, weights and stream states), its streams still drawing?
5. kernel_choice — at K=40: the grouped kernel in NCHW and NHWC, each with and without
   cudnn.benchmark, and bmm with and without TF32 products, fp32 and bf16, eagerly: ms per iteration
   and torch.cuda.max_memory_allocated, for W-CGAN and for DC-CGAN with DiffAugment + EMA.
6. eager_vs_graph — ms per iteration eagerly and captured at K ∈ {1, 40, 100} (the kernel `auto`
   picks: grouped for one label, bmm for more), bf16 then fp32, and whether K=100 fits.
7. bf16_vs_fp32 — 100 iterations (K=4) in fp32, in bf16 and, as the rounding-only yardstick, in fp32
   with the other kernel: the loss curves and how far bf16's drift from fp32's.
8. profile — torch.profiler's top kernels by CUDA time of the W-CGAN bmm bf16 iteration at K=40,
   and their shares by kind (GEMM, im2col/col2im, convolution, elementwise, reduction, other).

Each section is time-boxed to its share of what is left of --budget-s (default 300 s, ≈ 5 minutes on
one H200, so a section running late shortens the ones after it): it starts no new work once its box
is spent, and a backstop alarm ends it `GRACE_S` later; what it measured so far is kept ("partial").
Results are written as they come, under --out (default: $OUT if set, else benchmarks/results/gpu_check):
gpu_check.jsonl (one JSON line per measurement and per finished section) and gpu_check.md (a Markdown
summary, section by section).  A failed
correctness check or a section that raised makes the exit status 1; the other sections still run.

--cpu-smoke runs every section with tiny networks on the CPU in seconds (tests/test_benchmarks.py
does so): the CUDA-only checks run their code (both arms eager) and report "skipped: no CUDA".
The engine benchmark (docs/benchmarks.md, case h) reuses this file's pieces from
benchmarks/cases/engine.py; benchmarks/gpu_session.sh runs this check, case h and a short CUDA
pipeline run in one command on a lent GPU machine.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import os
import platform
import signal
import sys
import time
import traceback
from datetime import datetime
from pathlib import Path
from unittest import mock

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path[:0] = [str(HERE), str(REPO)]

import torch  # noqa: E402
from cases.engine import (  # noqa: E402
    EngineJob,
    Runtime,
    backend_flags,
    build_networks,
    configurations,
    engine_warnings,
    sync,
    timed_job,
    variants,
    warm_up,
)
from cases.gpu import device_info  # noqa: E402

NO_CUDA = "skipped: no CUDA"
GRACE_S = 15.0  # the backstop alarm: this long after a section's box, it is ended where it stands

FULL = {
    "k_small": 3,
    "iterations": 8,
    "k_kernel": 40,
    "k_graph": (1, 40, 100),
    "k_profile": 40,
    "k_curves": 4,
    "curve_iterations": 100,
    "images_per_label": 256,
    "warmup": 2,
    "timing": {"min_iterations": 3, "min_seconds": 0.2, "samples": 2},
    "profile_iterations": 3,
}
SMOKE = {
    "k_small": 2,
    "iterations": 5,
    "k_kernel": 2,
    "k_graph": (1, 2, 3),
    "k_profile": 2,
    "k_curves": 2,
    "curve_iterations": 6,
    "images_per_label": 16,
    "warmup": 1,
    "timing": {"min_iterations": 1, "min_seconds": 0.0, "samples": 1},
    "profile_iterations": 1,
}


class SectionTimeout(Exception):
    """A section's time box is spent."""


class Box:
    """A section's time box: `check` raises SectionTimeout once it is spent, before new work starts."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.deadline = time.monotonic() + seconds

    def check(self, before: str) -> None:
        if time.monotonic() > self.deadline:
            raise SectionTimeout(f"time box of {self.seconds:.0f} s spent before {before}")


@contextlib.contextmanager
def backstop(seconds: float):
    """SIGALRM raises SectionTimeout in whatever the section runs after `seconds` (main thread only)."""

    def alarm(signum, frame):
        raise SectionTimeout(f"ended by the backstop alarm after {seconds:.0f} s")

    try:
        previous = signal.signal(signal.SIGALRM, alarm)
    except ValueError:  # not the main thread
        yield
        return
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


class Check:
    """What the sections share: the device, the sizes, the models, and the two output files."""

    def __init__(self, out: Path, smoke: bool):
        self.smoke, self.out = smoke, out
        self.dev = torch.device("cpu" if smoke else "cuda")
        self.cuda = self.dev.type == "cuda"
        self.sizes = SMOKE if smoke else FULL
        self.models = variants(REPO, smoke)
        # The conditional model, with W-CGAN's CIFAR-10 settings (its loss): for the host-sync check.
        self.models["cgan"] = ("cgan", dict(self.models["wcgan"][1]))
        out.mkdir(parents=True, exist_ok=True)
        self.jsonl, self.md = out / "gpu_check.jsonl", out / "gpu_check.md"
        self.jsonl.write_text("")
        self.md.write_text("")

    def write(self, record: dict) -> None:
        """One JSON line, on disk at once: a run cut short keeps everything measured before."""
        with open(self.jsonl, "a") as f:
            f.write(json.dumps(record, default=str) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def markdown(self, text: str) -> None:
        with open(self.md, "a") as f:
            f.write(text.rstrip() + "\n\n")
            f.flush()
            os.fsync(f.fileno())

    def job(self, name: str, runtime: Runtime, k: int, **kwargs) -> EngineJob:
        model, settings = self.models[name]
        return EngineJob(
            model, settings, k, runtime, self.dev, images_per_label=self.sizes["images_per_label"], **kwargs
        )


# --------------------------------------------------------------------------- comparing two runs of a job


def snapshot(job: EngineJob, diagnostics: list) -> dict:
    """What a run of a job ends with, on the host: its diagnostics, every member's generator, critic
    and EMA state, every member's random streams, and whether its iteration was captured."""

    def host(sd):
        return {key: value.detach().cpu().clone() for key, value in sd.items()}

    return {
        "diagnostics": torch.stack(diagnostics).float().cpu(),  # (iterations, 4, K)
        "generators": [host(sd) for sd in job.nets.member_states(job.nets.gen.state_dict())],
        "critics": [host(sd) for sd in job.nets.member_states(job.nets.critic.state_dict())],
        "ema": None if job.ema is None else host(job.ema.state_dict()),
        "streams": [(cpu.get_state(), dev.get_state().cpu()) for cpu, dev in job.step.rngs],
        "captured": job.step.graph is not None,
    }


def run_job(check: Check, name: str, runtime: Runtime, k: int, iterations: int, patch=None) -> tuple[dict, list]:
    """`iterations` of a fresh job (seed 0: the same initial weights and streams every time) with
    capturable optimizers on CUDA, under `patch` (a context manager) if given; (snapshot, warnings)."""
    with contextlib.ExitStack() as stack:
        stack.enter_context(backend_flags(runtime))
        warnings = stack.enter_context(engine_warnings())
        if patch is not None:
            stack.enter_context(patch)
        job = check.job(name, runtime, k, capturable=check.cuda)
        diagnostics = [job().detach() for _ in range(iterations)]
        result = snapshot(job, diagnostics)
        drawn = [torch.randn(1, device=check.dev, generator=dev) for _, dev in job.step.rngs]  # still drawing?
        result["streams_draw"] = all(bool(torch.isfinite(x).all()) for x in drawn)
    return result, warnings


def largest_difference(a: list[dict] | dict, b: list[dict] | dict) -> tuple[float, float]:
    """(max |a - b|, the same relative to max |a|) over every floating-point tensor of the states."""
    a, b = (a, b) if isinstance(a, list) else ([a], [b])
    diff = scale = 0.0
    for sa, sb in zip(a, b):
        for key, value in sa.items():
            if value.is_floating_point() and value.numel():
                diff = max(diff, float((value.double() - sb[key].double()).abs().max()))
                scale = max(scale, float(value.double().abs().max()))
    return diff, diff / scale if scale else diff


def compare_runs(reference: dict, other: dict, precision: str) -> dict:
    """How far `other` ends from `reference`: losses, weights (per label), EMA, streams; and whether
    that is within rounding (fp32: 1e-4 of each quantity's scale, bf16: 1e-2) with equal streams."""
    ra, rb = reference["diagnostics"], other["diagnostics"]
    both_nan = torch.isnan(ra) & torch.isnan(rb)
    loss_diff = float(torch.where(both_nan, 0.0, (ra - rb).abs()).nan_to_num(math.inf).max()) if ra.numel() else 0.0
    loss_scale = float(torch.where(torch.isnan(ra), 0.0, ra.abs()).max()) if ra.numel() else 0.0
    gen = [largest_difference(a, b) for a, b in zip(reference["generators"], other["generators"])]
    critic = largest_difference(reference["critics"], other["critics"])
    ema = largest_difference(reference["ema"], other["ema"]) if reference["ema"] is not None else (0.0, 0.0)
    streams_equal = all(
        torch.equal(c1, c2) and torch.equal(d1, d2)
        for (c1, d1), (c2, d2) in zip(reference["streams"], other["streams"])
    )
    rtol = 1e-2 if precision == "bf16" else 1e-4
    bitwise = loss_diff == 0.0 and all(g == 0.0 for g, _ in gen) and critic[0] == 0.0 and ema[0] == 0.0
    within = (
        loss_diff <= rtol * loss_scale + 1e-6
        and all(rel <= rtol for _, rel in gen)
        and critic[1] <= rtol
        and ema[1] <= rtol
    )
    return {
        "max_loss_diff": loss_diff,
        "loss_scale": loss_scale,
        "generator_max_diff_per_label": [g for g, _ in gen],
        "generator_max_rel_diff": max(rel for _, rel in gen),
        "critic_max_diff": critic[0],
        "critic_max_rel_diff": critic[1],
        "ema_max_rel_diff": ema[1],
        "streams_equal": streams_equal,
        "bitwise_identical": bitwise,
        "tolerance": rtol,
        "within_tolerance": within,
    }


# --------------------------------------------------------------------------- sections


def section_environment(check: Check, box: Box, result: dict) -> str:
    result.update(device_info(check.dev))
    result.update(python=platform.python_version(), smoke=check.smoke, sizes=check.sizes)
    lines = [f"- {key}: {value}" for key, value in result.items() if key not in ("sizes", "backend")]
    lines.append(f"- TF32/cuDNN switches at start: {result['backend']}")
    check.markdown("\n".join(lines))
    return "ok"


def graph_cases(check: Check) -> list[tuple[str, Runtime, int]]:
    k = check.sizes["k_small"]
    return [
        ("wcgan", Runtime("bmm", precision="fp32"), k),
        ("wcgan", Runtime("bmm", precision="bf16"), k),
        ("dccgan+aug+ema", Runtime("bmm", precision="bf16"), k),
        ("wcgan", Runtime("grouped", precision="fp32"), 1),
    ]


def eager_and_other(check: Check, name: str, runtime: Runtime, k: int, patch=None) -> dict:
    """The job run eagerly and with a CUDA graph wanted (under `patch`), compared."""
    n = check.sizes["iterations"]
    eager, _ = run_job(check, name, runtime, k, n)
    graphed, warnings = run_job(check, name, dataclasses.replace(runtime, cuda_graph=True), k, n, patch=patch)
    return {
        "model": name,
        "configuration": dataclasses.replace(runtime, cuda_graph=True).label(),
        "labels": k,
        "iterations": n,
        "captured": graphed["captured"],
        "streams_draw_afterwards": graphed["streams_draw"],
        "warnings": warnings,
        **compare_runs(eager, graphed, runtime.precision),
    }


def section_graph_equals_eager(check: Check, box: Box, result: dict) -> str:
    cases = result.setdefault("cases", [])
    for name, runtime, k in graph_cases(check):
        box.check(f"{name} {runtime.label()}")
        case = eager_and_other(check, name, runtime, k)
        cases.append(case)
        check.write({"section": "graph_equals_eager", "item": case})
    check.markdown(
        "| model | configuration | K | captured | losses max diff | generator max rel diff | streams equal | "
        "bitwise | within rounding |\n|---|---|---:|---|---:|---:|---|---|---|\n"
        + "\n".join(
            f"| {c['model']} | {c['configuration']} | {c['labels']} | {c['captured']} | {c['max_loss_diff']:.3g} | "
            f"{c['generator_max_rel_diff']:.3g} | {c['streams_equal']} | {c['bitwise_identical']} | "
            f"{c['within_tolerance']} |"
            for c in cases
        )
    )
    if not check.cuda:
        return NO_CUDA + " (both arms ran eagerly: the comparison's code path only)"
    good = all(c["captured"] and c["streams_equal"] and c["within_tolerance"] for c in cases)
    return "ok" if good else "failed"


def section_no_host_sync(check: Check, box: Box, result: dict) -> str:
    k = check.sizes["k_small"]
    cases = [
        ("wcgan", Runtime("grouped", precision="fp32"), 1),
        ("wcgan", Runtime("bmm", precision="bf16"), k),
        ("dccgan+aug+ema", Runtime("grouped", precision="fp32"), 1),
        ("cgan", Runtime("grouped", precision="fp32"), k),
    ]
    found = result.setdefault("cases", [])
    for name, runtime, k in cases:
        box.check(f"{name} {runtime.label()}")
        job = check.job(name, runtime, k)
        warm_up(job, 3)
        sync(check.dev)
        case = {"model": name, "configuration": runtime.label(), "labels": k}
        try:
            if check.cuda:
                torch.cuda.set_sync_debug_mode("error")
            job()  # the iteration, then the EMA update, as the loop runs them
            case["host_sync"] = False
        except RuntimeError as exc:
            case.update(host_sync=True, error=str(exc)[:500], where=traceback.format_exc(limit=-4)[-1500:])
        finally:
            if check.cuda:
                torch.cuda.set_sync_debug_mode(0)
        sync(check.dev)
        found.append(case)
        check.write({"section": "no_host_sync", "item": case})
    check.markdown(
        "\n".join(
            f"- {c['model']} {c['configuration']} K={c['labels']}: "
            + (f"**host sync**: {c['error']}" if c["host_sync"] else "no host synchronisation")
            for c in found
        )
    )
    if not check.cuda:
        return NO_CUDA + " (the iterations ran without torch.cuda.set_sync_debug_mode)"
    return "failed" if any(c["host_sync"] for c in found) else "ok"


def forced_failures(check: Check) -> dict:
    """name -> a context manager that makes the next CUDA graph capture fail (torch.cuda.graph patched)."""
    real = torch.cuda.graph

    class FailAtEnd(real):
        """Records the whole iteration, then fails as an instantiation can."""

        def __exit__(self, *exc):
            super().__exit__(*exc)
            raise RuntimeError("gpu_check: forced failure at the end of the capture")

    class FailMidCapture(real):
        """Begins the capture, records a random draw under it, then fails: the capture is ended and the
        error reaches the engine's handler, as when an operation of the iteration fails mid-capture."""

        def __enter__(self):
            super().__enter__()
            try:
                torch.randn(16, device=check.dev)  # recorded, never run
                raise RuntimeError("gpu_check: forced failure mid-capture, after random draws under it")
            except RuntimeError:
                super().__exit__(*sys.exc_info())  # ends the capture, as the with statement would
                raise

    return {
        "mid-capture": mock.patch.object(torch.cuda, "graph", FailMidCapture),
        "at the end of the capture": mock.patch.object(torch.cuda, "graph", FailAtEnd),
    }


def section_forced_capture_failure(check: Check, box: Box, result: dict) -> str:
    cases = result.setdefault("cases", [])
    for how, patch in forced_failures(check).items():
        for name, runtime in (("wcgan", Runtime("bmm", precision="bf16")), ("dccgan+aug+ema", Runtime("bmm"))):
            box.check(f"{how} {name}")
            case = {"failure": how, **eager_and_other(check, name, runtime, check.sizes["k_small"], patch=patch)}
            case["warned"] = any(
                "CUDA graph capture" in w and "gpu_check: forced failure" in w for w in case["warnings"]
            )
            cases.append(case)
            check.write({"section": "forced_capture_failure", "item": case})
    check.markdown(
        "\n".join(
            f"- {c['failure']}, {c['model']} {c['configuration']}: captured={c['captured']}, warned={c['warned']}, "
            f"streams draw={c['streams_draw_afterwards']}, equal to a job that never tried: streams "
            f"{c['streams_equal']}, losses/weights within rounding {c['within_tolerance']} "
            f"(bitwise {c['bitwise_identical']})"
            for c in cases
        )
    )
    if not check.cuda:
        return NO_CUDA + " (no capture is attempted on the CPU: both arms ran eagerly)"
    good = all(
        not c["captured"]
        and c["warned"]
        and c["streams_draw_afterwards"]
        and c["streams_equal"]
        and c["within_tolerance"]
        for c in cases
    )
    return "ok" if good else "failed"


def timed_rows(check: Check, box: Box, section: str, plan: list, rows: list) -> None:
    """Time each (model, runtime, K) of `plan` in order, networks shared by one structure's rows; a
    failure (out of memory) is a row with its error.  Rows are written as they are measured."""
    built: dict = {}
    for name, runtime, k in plan:
        box.check(f"{name} K={k} {runtime.label()}")
        model, settings = check.models[name]
        key = (name, k, runtime.structure)
        row = {"model": name, "labels": k, "configuration": runtime.label(), **dataclasses.asdict(runtime)}
        try:
            if key not in built:
                built.clear()
                if check.cuda:
                    torch.cuda.empty_cache()
                built[key] = build_networks(model, settings, k, runtime, check.dev)
            row.update(timed_job(model, settings, k, runtime, check.dev, check.sizes, networks=built[key]))
            row["fits"] = True
        except SectionTimeout:
            raise
        except Exception as exc:  # noqa: BLE001 - out of memory is an answer ("does K=100 fit?")
            built.clear()
            row.update(
                error=f"{type(exc).__name__}: {str(exc)[:300]}", fits=not isinstance(exc, torch.cuda.OutOfMemoryError)
            )
        finally:
            if check.cuda:
                torch.cuda.empty_cache()
        rows.append(row)
        check.write({"section": section, "item": row})


def row_text(row: dict) -> str:
    if "error" in row:
        return f"failed: {row['error']}"
    peak = f", peak {row['peak_memory_bytes'] / 2**20:.0f} MiB" if row.get("peak_memory_bytes") else ""
    return f"{row['ms_per_iteration']:.4g} ms/it, {row['label_iterations_per_s']:.1f} label-it/s{peak}"


def section_kernel_choice(check: Check, box: Box, result: dict) -> str:
    k = check.sizes["k_kernel"]
    plan = [(name, rt, k) for name in ("wcgan", "dccgan+aug+ema") for rt in configurations(graphs=(False,))]
    rows = result.setdefault("rows", [])
    try:
        timed_rows(check, box, "kernel_choice", plan, rows)
    finally:
        best = {}
        for row in rows:
            if "error" not in row:
                key = f"{row['model']} {row['precision']}"
                if key not in best or row["ms_per_iteration"] < best[key]["ms_per_iteration"]:
                    best[key] = row
        result["fastest"] = {key: row["configuration"] for key, row in best.items()}
        check.markdown(
            f"K={k}, eager.\n\n| model | configuration | result |\n|---|---|---|\n"
            + "\n".join(f"| {r['model']} | {r['configuration']} | {row_text(r)} |" for r in rows)
            + "\n\nFastest: "
            + "; ".join(f"{key}: {value}" for key, value in result["fastest"].items())
        )
    return "ok"


def section_eager_vs_graph(check: Check, box: Box, result: dict) -> str:
    plan = []
    for precision in ("bf16", "fp32"):
        for name in ("wcgan", "dccgan+aug+ema"):
            for k in check.sizes["k_graph"]:
                kernel = "grouped" if k == 1 else "bmm"  # runtime.packed_kernel auto's CUDA choice
                graphs = (False, True) if check.cuda else (False,)
                plan += [(name, Runtime(kernel, precision=precision, cuda_graph=g), k) for g in graphs]
    rows = result.setdefault("rows", [])
    try:
        timed_rows(check, box, "eager_vs_graph", plan, rows)
    finally:
        pairs = {}
        for row in rows:
            pairs.setdefault((row["model"], row["precision"], row["labels"]), {})[row["cuda_graph"]] = row
        lines = ["| model | precision | K | eager | CUDA graph | speed-up |", "|---|---|---:|---|---|---:|"]
        for (name, precision, k), pair in pairs.items():
            eager, graph = pair.get(False), pair.get(True)
            speedup = ""
            if eager and graph and "error" not in eager and "error" not in graph:
                speedup = f"{eager['ms_per_iteration'] / graph['ms_per_iteration']:.2f}×"
            graph_text = row_text(graph) if graph else (NO_CUDA if not check.cuda else "not run")
            eager_text = row_text(eager) if eager else "not run"
            lines.append(f"| {name} | {precision} | {k} | {eager_text} | {graph_text} | {speedup} |")
        result["largest_k_fits"] = {
            f"{r['model']} {r['configuration']}": r["fits"] for r in rows if r["labels"] == max(check.sizes["k_graph"])
        }
        check.markdown("\n".join(lines))
    return "ok" if check.cuda else NO_CUDA + " (the graph half; the eager rows ran)"


def curves(snap: dict) -> dict:
    """Per iteration, the members' mean d_loss and g_loss (and the Wasserstein estimate where there is one)."""
    d = snap["diagnostics"].double()
    out = {"d_loss": d[:, 0].mean(1).tolist(), "g_loss": d[:, 1].mean(1).tolist()}
    if not torch.isnan(d[:, 3]).all():
        out["wasserstein"] = d[:, 3].mean(1).tolist()
    return out


def drift(reference: dict, other: dict) -> dict:
    """How far `other`'s curves and final generators lie from `reference`'s."""
    out = {}
    for key in ("d_loss", "g_loss"):
        a, b = torch.tensor(reference["curves"][key]), torch.tensor(other["curves"][key])
        scale = float(a.abs().mean()) or 1.0
        tail = max(1, len(a) // 5)
        out[key] = {
            "mean_abs_diff_rel": float((a - b).abs().mean()) / scale,
            "last_fifth_mean_abs_diff_rel": float((a[-tail:] - b[-tail:]).abs().mean()) / scale,
            "max_abs_diff": float((a - b).abs().max()),
        }
    num = den = 0.0
    for sa, sb in zip(reference["generators"], other["generators"]):
        for key, value in sa.items():
            if value.is_floating_point():
                num += float((value.double() - sb[key].double()).square().sum())
                den += float(value.double().square().sum())
    out["generator_weights_rel_l2"] = math.sqrt(num / den) if den else 0.0
    return out


def section_bf16_vs_fp32(check: Check, box: Box, result: dict) -> str:
    k, n = check.sizes["k_curves"], check.sizes["curve_iterations"]
    kernel = "bmm" if check.cuda else "grouped"  # runtime.packed_kernel auto for K > 1 on this device
    other = "grouped" if kernel == "bmm" else "bmm"
    runs = {
        "fp32": Runtime(kernel, precision="fp32"),
        "bf16": Runtime(kernel, precision="bf16"),
        f"fp32, {other} kernel": Runtime(other, precision="fp32"),
    }
    models = result.setdefault("models", {})
    for name in ("wcgan", "dccgan+aug+ema"):
        done = models.setdefault(name, {"kernel": kernel, "labels": k, "iterations": n, "runs": {}})
        for label, runtime in runs.items():
            box.check(f"{name} {label}")
            snap, _ = run_job(check, name, runtime, k, n)
            snap["curves"] = curves(snap)
            done["runs"][label] = snap
        reference = done["runs"]["fp32"]
        done["drift_from_fp32"] = {
            label: drift(reference, snap) for label, snap in done["runs"].items() if label != "fp32"
        }
        done["runs"] = {label: {"curves": snap["curves"]} for label, snap in done["runs"].items()}
        check.write({"section": "bf16_vs_fp32", "item": {"model": name, **done}})
    lines = [
        f"K={k}, {n} iterations, {kernel} kernel; drift from fp32 (mean |Δ| over the run / mean |fp32|; last fifth):",
        "",
        "| model | run | d_loss | d_loss, last fifth | g_loss | g_loss, last fifth | generator weights rel. L2 |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for name, done in models.items():
        for label, d in done.get("drift_from_fp32", {}).items():
            lines.append(
                f"| {name} | {label} | {d['d_loss']['mean_abs_diff_rel']:.3g} | "
                f"{d['d_loss']['last_fifth_mean_abs_diff_rel']:.3g} | {d['g_loss']['mean_abs_diff_rel']:.3g} | "
                f"{d['g_loss']['last_fifth_mean_abs_diff_rel']:.3g} | {d['generator_weights_rel_l2']:.3g} |"
            )
    check.markdown("\n".join(lines))
    return "ok"


KINDS = (  # by name, first match: rough, but enough to tell GEMM-bound from memory-bound
    ("convolution", ("conv", "cudnn", "fprop", "dgrad", "wgrad", "implicit", "winograd")),
    ("im2col/col2im", ("im2col", "col2im", "unfold", "fold")),
    ("GEMM", ("gemm", "cutlass", "cublas", "xmma", "nvjet", "bmm", "matmul", "aten::mm", "addmm")),
    ("reduction", ("reduce", "sum", "norm", "mean")),
    ("elementwise", ("elementwise", "vectorized", "unrolled", "add", "mul", "copy", "fill", "where", "pow")),
)


def kind_of(name: str) -> str:
    lowered = name.lower()
    for kind, words in KINDS:
        if any(w in lowered for w in words):
            return kind
    return "other"


def section_profile(check: Check, box: Box, result: dict) -> str:
    from torch.profiler import ProfilerActivity, profile

    k, n = check.sizes["k_profile"], check.sizes["profile_iterations"]
    runtime = Runtime("bmm", precision="bf16")
    box.check("building the job")
    job = check.job("wcgan", runtime, k)
    warm_up(job, 3)
    sync(check.dev)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if check.cuda else [])
    with profile(activities=activities) as prof:
        for _ in range(n):
            job()
        sync(check.dev)
    events = prof.key_averages()
    unit = "device" if check.cuda else "cpu"
    if check.cuda:  # the kernels (and copies) themselves: an operator's device time would count them twice
        from torch.autograd import DeviceType

        events = [e for e in events if e.device_type == DeviceType.CUDA]
        names = ("self_device_time_total", "device_time_total", "self_cuda_time_total", "cuda_time_total")
    else:
        names = ("self_cpu_time_total",)

    def spent(e) -> float:  # µs; the attribute's name changed across PyTorch versions
        return float(next((getattr(e, a) for a in names if hasattr(e, a)), 0.0))

    timed = sorted(((spent(e), e) for e in events), key=lambda t: -t[0])
    total = sum(t for t, _ in timed) or 1.0
    top = [
        {
            "name": e.key[:160],
            "calls_per_iteration": e.count / n,
            f"{unit}_ms_per_iteration": t / 1e3 / n,
            "share": t / total,
        }
        for t, e in timed[:25]
        if t > 0
    ]
    kinds: dict[str, float] = {}
    for t, e in timed:
        kinds[kind_of(e.key)] = kinds.get(kind_of(e.key), 0.0) + t / total
    result.update(
        model="wcgan",
        configuration=runtime.label(),
        labels=k,
        iterations_profiled=n,
        time="kernels' device time" if check.cuda else "operators' self CPU time",
        total_ms_per_iteration=total / 1e3 / n,
        top=top,
        shares_by_kind=dict(sorted(kinds.items(), key=lambda kv: -kv[1])),
    )
    check.markdown(
        f"W-CGAN {runtime.label()}, K={k}: {result['total_ms_per_iteration']:.4g} ms of {unit} time per iteration; "
        "by kind: "
        + ", ".join(f"{kind} {100 * share:.1f}%" for kind, share in result["shares_by_kind"].items())
        + f"\n\n| kernel / op | calls/it | {unit} ms/it | share |\n|---|---:|---:|---:|\n"
        + "\n".join(
            f"| `{t['name'][:100].replace('|', '/')}` | {t['calls_per_iteration']:.3g} | "
            f"{t[f'{unit}_ms_per_iteration']:.4g} | {100 * t['share']:.1f}% |"
            for t in top
        )
    )
    return "ok"


# (name, share of the budget, what it answers, function), in the order they run
SECTIONS = [
    ("environment", 0.02, "torch/CUDA/cuDNN versions, device, TF32 and cuDNN switches", section_environment),
    (
        "graph_equals_eager",
        0.14,
        "does capture work, and does the captured iteration equal eager execution (losses, weights, streams)?",
        section_graph_equals_eager,
    ),
    ("no_host_sync", 0.05, "does a steady-state eager iteration ever wait for the GPU?", section_no_host_sync),
    (
        "forced_capture_failure",
        0.12,
        "does a failed capture leave the job eager, warned, and exactly where a job that never tried would be?",
        section_forced_capture_failure,
    ),
    (
        "kernel_choice",
        0.25,
        "at K=40, which kernel/layout/flags is fastest in fp32 and in bf16, and at what memory?",
        section_kernel_choice,
    ),
    (
        "eager_vs_graph",
        0.2,
        "how much does the CUDA graph save at K = 1, 40, 100, and does K=100 fit?",
        section_eager_vs_graph,
    ),
    (
        "bf16_vs_fp32",
        0.12,
        "how far do bf16's loss curves drift from fp32's over 100 iterations?",
        section_bf16_vs_fp32,
    ),
    ("profile", 0.1, "where does the W-CGAN bmm bf16 iteration at K=40 spend its GPU time?", section_profile),
]


def run_section(check: Check, name: str, seconds: float, question: str, fn) -> str:
    """One section in its time box; its record (status, seconds, result) written whatever happens."""
    print(f"gpu_check: {name} ({seconds:.0f} s box): {question}", flush=True)
    check.markdown(f"## {name}\n\n*{question}*")
    result: dict = {}
    t0 = time.perf_counter()
    try:
        with backstop(seconds + GRACE_S):
            status = fn(check, Box(seconds), result)
    except SectionTimeout as exc:
        status = f"partial: {exc}"
    except Exception as exc:  # noqa: BLE001 - one section's failure must not cost the others
        status = f"error: {type(exc).__name__}: {str(exc)[:300]}"
        result["traceback"] = traceback.format_exc()[-3000:]
        traceback.print_exc()
    finally:
        if check.cuda:
            torch.cuda.empty_cache()
    seconds_taken = time.perf_counter() - t0
    check.write({"section": name, "status": status, "seconds": round(seconds_taken, 1), "result": result})
    check.markdown(f"**{name}: {status}** ({seconds_taken:.0f} s)")
    print(f"gpu_check: {name}: {status} ({seconds_taken:.1f} s)", flush=True)
    return status


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default_out = Path(os.environ["OUT"]) if os.environ.get("OUT") else HERE / "results" / "gpu_check"
    ap.add_argument("--out", type=Path, default=default_out, help=f"results folder (default: $OUT, else {default_out})")
    ap.add_argument("--budget-s", type=float, default=300.0, help="seconds for all sections together (default 300)")
    ap.add_argument("--cpu-smoke", action="store_true", help="every section's code path, tiny, on the CPU")
    ap.add_argument("--sections", nargs="+", choices=[s[0] for s in SECTIONS], help="run only these sections")
    args = ap.parse_args(argv)
    if not args.cpu_smoke and not torch.cuda.is_available():
        print("gpu_check: no CUDA device here; run it on a GPU machine, or add --cpu-smoke to test its code path")
        return 2
    if args.cpu_smoke:
        torch.set_num_threads(1)  # a smoke test on a shared CPU
    import logging

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    check = Check(args.out, args.cpu_smoke)
    chosen = [s for s in SECTIONS if not args.sections or s[0] in args.sections]
    share = sum(s[1] for s in chosen)
    started = datetime.now().astimezone().isoformat(timespec="seconds")
    check.write(
        {
            "command": " ".join(["benchmarks/gpu_check.py", *(argv if argv is not None else sys.argv[1:])]),
            "started": started,
        }
    )
    what = "CPU smoke test (tiny networks; figures mean nothing)" if check.smoke else "CUDA, CIFAR-10 size"
    check.markdown(
        f"# GPU check of the training engine\n\n{started}, {what}; budget {args.budget_s:.0f} s; "
        '`benchmarks/gpu_check.py` (docs/benchmarks.md, "The GPU check").'
    )
    # Each section's box: its share of what is left, so that one running late shortens the ones after it.
    deadline, statuses = time.monotonic() + args.budget_s, {}
    for name, part, question, fn in chosen:
        box = max(deadline - time.monotonic(), 0.0) * part / share
        share -= part
        statuses[name] = run_section(check, name, box, question, fn)
    summary = "\n".join(f"- {name}: {status}" for name, status in statuses.items())
    check.markdown("## Summary\n\n" + summary)
    print("gpu_check summary:\n" + summary + f"\nresults: {check.jsonl}, {check.md}", flush=True)
    return 1 if any(s == "failed" or s.startswith("error") for s in statuses.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
