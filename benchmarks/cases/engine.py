"""Case h: the training engine's label-iterations/s for every kernel, layout, precision and CUDA-graph
choice, against the same device's fp32 and bf16 matrix-product ceilings.

    .venv/bin/python benchmarks/run.py engine            # CUDA; --device cpu --quick: the CPU smoke test

It times `labelwise.train.engine.TrainingIteration` — the iteration `labelwise.train.loop.train_job`
runs for every job — built as `train_job` builds it (`job_networks`, Adam, the model's loss object,
DiffAugment and the generator's EMA where the settings ask for them), on synthetic images already
on the device.  Speed depends neither on the pixels nor on the weights, so a job's networks are
built once per (model, K, kernel, layout) and serve every row of that structure.

Models (`VARIANTS`): presets/cifar10.yaml's wcgan (width 64, 32×32×3, batch 64, 5 critic steps with
the gradient penalty), its dccgan (batch 100, 1 step) with the DiffAugment policy and EMA decay
that config.yaml's dccgan uses (the EMA update runs after each iteration, in the loop, and is timed
with it), and the same dccgan without them.  K ∈ {40, 1, 100, 10} labels, in that order of
interest.  For each: every configuration of `configurations` — the grouped kernel in NCHW and in
NHWC (channels_last), each with and without `torch.backends.cudnn.benchmark`; the bmm kernel with
and without TF32 matrix products (`torch.backends.cuda.matmul.allow_tf32`, fp32 only: bf16 products
never use TF32); each in fp32 and bf16 (autocast), and on CUDA each eagerly and captured in a CUDA
graph (optimizers built capturable, as `train_job` builds them for a graph).  A capture that fails
falls back to eager with a warning: that row is listed under "skipped" with the warning's reason.

Timing: after warm-up (and capture), one timed iteration fixes the iterations per sample —
max(`min_iterations`, enough for `min_seconds`) — then `samples` samples of that many iterations,
the device synchronised at both ends of each; the figure is the median.  Each row records ms per
iteration, label-iterations/s (K × iterations / s), torch.cuda.max_memory_allocated over the row
(networks included), the backend settings it ran with (TF32 and cuDNN flags), and its fraction of
the matrix-product ceiling of its precision, measured in the same run (n×n @ n×n, n = 8192; --quick
256): bf16 rows against the bf16 rate, fp32 rows against the fp32 rate with TF32 off (IEEE), and
every fp32 row also against the TF32 rate (the bound for rows whose products may use TF32: bmm +
TF32, and the grouped kernel, whose cuDNN convolutions use TF32 unless torch.backends.cudnn.allow_tf32
is off).  FLOPs per label-iteration come from `labelwise.train.compute.label_iteration_flops`, the
budget's counter, which counts this iteration on the meta device.

Rows print as they finish; with $LABELWISE_BENCH_PARTIAL set they are written there after each one.
A failing row (out of memory at K=100) is listed under "skipped" and the others go on.  After
$LABELWISE_BENCH_ENGINE_BUDGET_S seconds (default `BUDGET_S`) no new row starts: the rest are
listed as skipped, so the command ends in bounded time; raise it for the whole table.  The case
ends with a Markdown table of its rows.
"""

from __future__ import annotations

import logging
import math
import os
import statistics
import time
import traceback
from contextlib import contextmanager
from dataclasses import asdict, dataclass

import torch
import yaml
from harness import Row, backend_settings

from .gpu import bench_device, device_info, save_partial

NAME = "engine"
DESCRIPTION = (
    "training engine: label-iterations/s per K, kernel, layout, precision, cudnn.benchmark/TF32, CUDA graph; "
    "vs the fp32 and bf16 matmul ceilings"
)
SKIP_LINE = "engine: skipped (no CUDA device; use --device cpu --quick to smoke-test the code path)"
BUDGET_ENV = "LABELWISE_BENCH_ENGINE_BUDGET_S"
BUDGET_S = 240.0  # default seconds of this case before no new row starts: the command ends within 5 minutes
QUICK_NETS = {"width": 4, "latent_dim": 16, "batch_size": 8}  # --quick: tiny networks, same structure
CHANNELS, RESOLUTION = 3, 32  # CIFAR-10


def sizes(quick: bool) -> dict:
    """The case's sizes: K values (in order of interest), images per label, timing and ceiling sizes."""
    if quick:
        return {
            "ks": (1, 2),
            "images_per_label": 16,
            "warmup": 1,
            "timing": {"min_iterations": 1, "min_seconds": 0.0, "samples": 2},
            "matmul_n": 256,
        }
    return {
        "ks": (40, 1, 100, 10),
        "images_per_label": 256,
        "warmup": 2,
        "timing": {"min_iterations": 5, "min_seconds": 0.25, "samples": 3},
        "matmul_n": 8192,
    }


def variants(repo, quick: bool) -> dict[str, tuple[str, dict]]:
    """name -> (model, settings): presets/cifar10.yaml's wcgan and dccgan, and the dccgan with
    config.yaml's DiffAugment policy and EMA decay ("dccgan+aug+ema"); --quick: tiny networks."""
    preset = yaml.safe_load((repo / "presets" / "cifar10.yaml").read_text())["models"]
    config = yaml.safe_load((repo / "config.yaml").read_text())["models"]["dccgan"]
    extras = {key: config[key] for key in ("augment", "augment_policy", "ema") if key in config}
    small = QUICK_NETS if quick else {}
    return {
        "wcgan": ("wcgan", {**preset["wcgan"], **small}),
        "dccgan+aug+ema": ("dccgan", {**preset["dccgan"], **extras, **small}),
        "dccgan": ("dccgan", {**preset["dccgan"], **small}),
    }


# --------------------------------------------------------------------------- configurations


@dataclass(frozen=True)
class Runtime:
    """How a job's iteration runs: what `train_job`'s runtime options and PyTorch's backend flags choose."""

    kernel: str  # 'grouped' or 'bmm' (labelwise.train.packed_layers)
    channels_last: bool = False
    precision: str = "fp32"
    cudnn_benchmark: bool = False  # torch.backends.cudnn.benchmark
    matmul_tf32: bool = False  # torch.backends.cuda.matmul.allow_tf32 (PyTorch's default: off)
    cuda_graph: bool = False

    @property
    def memory_format(self) -> torch.memory_format:
        return torch.channels_last if self.channels_last else torch.contiguous_format

    @property
    def structure(self) -> tuple[str, bool]:
        """What the networks are built with: rows of one structure share them."""
        return self.kernel, self.channels_last

    def label(self) -> str:
        """e.g. 'grouped NHWC bf16, cudnn.benchmark + CUDA graph', 'bmm fp32, TF32'."""
        text = f"{self.kernel}{(' NHWC' if self.channels_last else ' NCHW') if self.kernel == 'grouped' else ''}"
        text += f" {self.precision}"
        flags = [name for name, on in (("cudnn.benchmark", self.cudnn_benchmark), ("TF32", self.matmul_tf32)) if on]
        return text + (", " + ", ".join(flags) if flags else "") + (" + CUDA graph" if self.cuda_graph else "")


def configurations(precisions=("bf16", "fp32"), graphs=(False, True)) -> list[Runtime]:
    """The kernel question's configurations, networks' structure by structure: the grouped kernel in
    NCHW and NHWC, each with and without cudnn.benchmark; bmm (its weights stay in plain layout),
    in fp32 with and without TF32 products; each precision, eager and captured."""
    out = []
    for kernel, channels_last in (("grouped", False), ("grouped", True), ("bmm", False)):
        for precision in precisions:
            if kernel == "grouped":
                flags = [(False, False), (True, False)]
            else:  # cuDNN does not run the bmm kernel; TF32 applies to fp32 products only
                flags = [(False, False), (False, True)] if precision == "fp32" else [(False, False)]
            for benchmark, tf32 in flags:
                for graph in graphs:
                    out.append(Runtime(kernel, channels_last, precision, benchmark, tf32, graph))
    return out


@contextmanager
def backend_flags(runtime: Runtime):
    """torch.backends.cudnn.benchmark and torch.backends.cuda.matmul.allow_tf32 as `runtime` says,
    restored afterwards (both are process-wide)."""
    before = torch.backends.cudnn.benchmark, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.benchmark = runtime.cudnn_benchmark
    torch.backends.cuda.matmul.allow_tf32 = runtime.matmul_tf32
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark, torch.backends.cuda.matmul.allow_tf32 = before


# --------------------------------------------------------------------------- a job on synthetic images


def build_networks(model: str, settings: dict, k: int, runtime: Runtime, dev: torch.device, seed: int = 0):
    """The networks `train_job` builds for a job of K members (the conditional model: one, over K classes)."""
    from labelwise import models
    from labelwise.seeds import CONDITIONAL_SEED_LABEL
    from labelwise.train.networks import job_networks

    conditional = models.get(model).conditional
    return job_networks(
        model,
        settings,
        CHANNELS,
        RESOLUTION,
        seed,
        [CONDITIONAL_SEED_LABEL] if conditional else list(range(k)),
        dev,
        num_classes=k if conditional else 1,
        kernel=runtime.kernel,
        memory_format=runtime.memory_format,
    )


class EngineJob:
    """One job's training iteration (and EMA update) as `train_job` runs it, on synthetic images.

    `networks`: built by `build_networks` (made here when None); `capturable`: the optimizers'
    flag (default: whether the iteration is captured, as `train_job` chooses).  Calling the job runs
    one iteration and then the EMA update, and returns the iteration's (4, K) diagnostics.
    """

    def __init__(
        self,
        model: str,
        settings: dict,
        k: int,
        runtime: Runtime,
        dev: torch.device,
        *,
        images_per_label: int,
        seed: int = 0,
        networks=None,
        capturable: bool | None = None,
    ):
        from labelwise import losses, models
        from labelwise.seeds import CONDITIONAL_SEED_LABEL
        from labelwise.train.augment import policy_of
        from labelwise.train.ema import GeneratorEMA, ema_decay
        from labelwise.train.engine import TrainingIteration, label_generators
        from labelwise.train.loop import learning_rates

        conditional = models.get(model).conditional
        self.k, self.dev, self.runtime = k, dev, runtime
        self.nets = networks if networks is not None else build_networks(model, settings, k, runtime, dev, seed)
        graph = runtime.cuda_graph and dev.type == "cuda"
        capturable = graph if capturable is None else capturable
        betas = tuple(settings["betas"])
        lr_g, lr_d = learning_rates(settings)
        self.opt_g = torch.optim.Adam(self.nets.gen.parameters(), lr=lr_g, betas=betas, capturable=capturable)
        self.opt_d = torch.optim.Adam(self.nets.critic.parameters(), lr=lr_d, betas=betas, capturable=capturable)
        decay = ema_decay(settings)
        self.ema = GeneratorEMA(self.nets.gen, decay) if decay else None
        pixels = torch.Generator(device=dev).manual_seed(seed)
        pool = torch.rand(k * images_per_label, CHANNELS, RESOLUTION, RESOLUTION, device=dev, generator=pixels) * 2 - 1
        classes = None
        if conditional:
            classes = torch.arange(k, device=dev).repeat_interleave(images_per_label)
            counts, slots = [k * images_per_label], [CONDITIONAL_SEED_LABEL]
        else:
            counts, slots = [images_per_label] * k, list(range(k))
        self.rngs = [label_generators(seed, slot, dev) for slot in slots]
        self.step = TrainingIteration(
            self.nets,
            self.opt_g,
            self.opt_d,
            losses.loss_for(models.get(model).loss, settings),
            pool,
            counts,
            self.rngs,  # the iteration's own list: a failed capture may replace a generator in it
            batch_size=int(settings["batch_size"]),
            latent_dim=int(settings["latent_dim"]),
            critic_steps=int(settings["critic_steps"]),
            classes=classes,
            precision=runtime.precision,
            cuda_graph=graph,
            augment=policy_of(settings),
        )
        self.nets.gen.train()
        self.nets.critic.train()
        self.iteration = 0

    def __call__(self) -> torch.Tensor:
        out = self.step()
        self.iteration += 1
        if self.ema is not None:  # in the loop, after the iteration (never captured)
            self.ema.update(self.nets.gen, self.iteration)
        return out


def sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def measure(job, dev: torch.device, *, min_iterations: int, min_seconds: float, samples: int) -> dict:
    """Seconds per iteration of `job` (already warm): one timed iteration fixes the count per sample,
    max(min_iterations, ceil(min_seconds / its time)); then `samples` samples of that count, the
    device synchronised at both ends of each."""
    sync(dev)
    t0 = time.perf_counter()
    job()
    sync(dev)
    first = time.perf_counter() - t0
    n = max(int(min_iterations), math.ceil(min_seconds / max(first, 1e-9)))
    per_iteration = []
    for _ in range(samples):
        sync(dev)
        t0 = time.perf_counter()
        for _ in range(n):
            job()
        sync(dev)
        per_iteration.append((time.perf_counter() - t0) / n)
    return {"iterations_per_sample": n, "seconds_per_iteration": per_iteration, "first_iteration_s": first}


@contextmanager
def engine_warnings():
    """The messages of the warnings `labelwise.train` logs meanwhile (a CUDA graph capture that
    falls back to eager says why in one)."""
    messages: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record):
            messages.append(record.getMessage())

    handler = Collect(level=logging.WARNING)
    logger = logging.getLogger("labelwise.train")
    logger.addHandler(handler)
    try:
        yield messages
    finally:
        logger.removeHandler(handler)


def warm_up(job: EngineJob, iterations: int) -> None:
    """`iterations` eager iterations; with a CUDA graph wanted, enough for the capture and one replay."""
    from labelwise.train.engine import GRAPH_WARMUP

    wanted = job.runtime.cuda_graph and job.dev.type == "cuda"
    for _ in range(max(iterations, GRAPH_WARMUP + 1) if wanted else iterations):
        job()


def timed_job(
    model: str, settings: dict, k: int, runtime: Runtime, dev, sz: dict, networks=None, timing_args: dict | None = None
) -> dict:
    """Build, warm up and time one configuration: ms per iteration (samples and median), peak memory,
    and the backend settings it ran with.  Raises if a wanted CUDA graph could not be captured."""
    cuda = dev.type == "cuda"
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(dev)
    with backend_flags(runtime), engine_warnings() as warnings:
        job = EngineJob(model, settings, k, runtime, dev, images_per_label=sz["images_per_label"], networks=networks)
        warm_up(job, sz["warmup"])
        if runtime.cuda_graph and cuda and job.step.graph is None:
            raise RuntimeError(f"CUDA graph capture failed, the job stayed eager: {' | '.join(warnings) or '?'}")
        timing = measure(job, dev, **(timing_args or sz["timing"]))
        settings_now = backend_settings()
        ema_s = None
        if job.ema is not None:  # the EMA update's own share of the iteration
            sync(dev)
            t0 = time.perf_counter()
            for _ in range(timing["iterations_per_sample"]):
                job.ema.update(job.nets.gen, job.iteration)
            sync(dev)
            ema_s = (time.perf_counter() - t0) / timing["iterations_per_sample"]
    seconds = statistics.median(timing["seconds_per_iteration"])
    return {
        **timing,
        "ms_per_iteration": 1e3 * seconds,
        "label_iterations_per_s": k / seconds,
        "ema_update_ms": None if ema_s is None else 1e3 * ema_s,
        "peak_memory_bytes": int(torch.cuda.max_memory_allocated(dev)) if cuda else None,
        "backend": settings_now,
        "captured": job.step.graph is not None,
    }


# --------------------------------------------------------------------------- ceilings


def matmul_rate(dev: torch.device, n: int, dtype: torch.dtype, tf32: bool = False, repeats: int = 5) -> float:
    """FLOP/s of an n×n @ n×n product in `dtype` (fp32: TF32 products on or off) on `dev`, median of `repeats`."""
    with backend_flags(Runtime("bmm", matmul_tf32=tf32)):
        a = torch.randn(n, n, device=dev, dtype=dtype)
        b = torch.randn(n, n, device=dev, dtype=dtype)
        for _ in range(2):
            a @ b
        times = []
        for _ in range(repeats):
            sync(dev)
            t0 = time.perf_counter()
            for _ in range(10):
                a @ b
            sync(dev)
            times.append((time.perf_counter() - t0) / 10)
    return 2.0 * n**3 / statistics.median(times)


def ceilings(dev: torch.device, n: int) -> dict[str, float]:
    """The device's measured matmul rates (FLOP/s): bf16, fp32 with TF32 off (IEEE) and with TF32 on."""
    return {
        "bf16": matmul_rate(dev, n, torch.bfloat16),
        "fp32": matmul_rate(dev, n, torch.float32, tf32=False),
        "tf32": matmul_rate(dev, n, torch.float32, tf32=True),
    }


CEILING_NAMES = {"bf16": "bf16 matmul", "fp32": "fp32 matmul (TF32 off)", "tf32": "fp32 matmul with TF32"}


# --------------------------------------------------------------------------- the case


def run(ctx) -> list:
    from labelwise.train.compute import label_iteration_flops  # the budget's counter, on the meta device

    dev = bench_device(ctx, NAME, SKIP_LINE, "CIFAR-10 sizes at K=100 on a CPU would take hours")
    if dev is None:
        return []
    if dev.type == "cpu":
        torch.set_num_threads(1)  # the smoke test on a shared CPU: one thread never spin-waits for a busy core
    sz = sizes(ctx.quick)
    budget = float(os.environ.get(BUDGET_ENV) or BUDGET_S)
    started = time.perf_counter()
    info = device_info(dev)
    rates = ceilings(dev, sz["matmul_n"])
    print(
        f"engine: {info['device_name']}, torch {info['torch']} (CUDA {info['torch_cuda']}); matmul n={sz['matmul_n']}: "
        + ", ".join(f"{CEILING_NAMES[p]} {r / 1e12:.3g} TFLOP/s" for p, r in rates.items()),
        flush=True,
    )
    print(f"engine: backend switches at start {info['backend']}", flush=True)
    models = variants(ctx.repo, ctx.quick)
    flops = {name: label_iteration_flops(m, s, CHANNELS, RESOLUTION) for name, (m, s) in models.items()}
    for name, f in flops.items():
        print(f"engine: {name}: {f / 1e9:.4g} GFLOP per label-iteration (counted)", flush=True)

    cuda = dev.type == "cuda"
    configs = configurations(graphs=(False, True) if cuda else (False,))
    # In order of interest: both models as the pipeline trains them, K by K; the plain dccgan last.
    plan = [(k, name) for k in sz["ks"] for name in ("wcgan", "dccgan+aug+ema")] + [(k, "dccgan") for k in sz["ks"]]
    rows: list[Row] = []
    out_of_time = 0
    for k, name in plan:
        model, settings = models[name]
        built = {}  # the networks of one structure at a time, shared by its rows
        for runtime in configs:
            case, label = f"h.engine/{name}/K={k}", runtime.label()
            if time.perf_counter() - started > budget:
                ctx.skip(f"{case}/{label}", f"time budget of {budget:.0f} s spent (${BUDGET_ENV})")
                out_of_time += 1
                continue
            try:
                if runtime.structure not in built:
                    built.clear()
                    if cuda:
                        torch.cuda.empty_cache()
                    built[runtime.structure] = build_networks(model, settings, k, runtime, dev)
                result = timed_job(model, settings, k, runtime, dev, sz, networks=built[runtime.structure])
            except Exception as exc:  # noqa: BLE001 - out of memory at K=100 must not end the run
                ctx.log(traceback.format_exc(limit=3))
                ctx.skip(f"{case}/{label}", f"failed: {type(exc).__name__}: {str(exc)[:300]}")
                print(f"engine: {name} K={k} {label}: failed: {type(exc).__name__}: {str(exc)[:200]}", flush=True)
                built.clear()
                continue
            finally:
                if cuda:
                    torch.cuda.empty_cache()
            row = engine_row(case, name, models[name], k, runtime, result, flops[name], rates, sz, info)
            rows.append(row)
            e = row.extra
            print(
                f"engine: {name} K={k} {label}: {e['ms_per_iteration']:.4g} ms/it, "
                f"{e['label_iterations_per_s']:.1f} label-it/s, {100 * e['fraction_of_ceiling']:.2f}% of the "
                f"{e['ceiling']}" + (f", peak {e['peak_memory_bytes'] / 2**20:.0f} MiB" if cuda else ""),
                flush=True,
            )
            save_partial(ctx, rows)
    if out_of_time:
        print(f"engine: {out_of_time} rows not run: the time budget of {budget:.0f} s was spent (${BUDGET_ENV})")
    print("\n" + markdown_table([r.as_dict() for r in rows]), flush=True)
    return rows


def engine_row(case, name, model_settings, k, runtime, result, flops, rates, sz, info) -> Row:
    model, settings = model_settings
    ceiling = runtime.precision  # bf16 rows against bf16, fp32 rows against fp32 with TF32 off
    per_label_it = [s / k for s in result["seconds_per_iteration"]]
    seconds = statistics.median(per_label_it)
    ceiling_s = flops / rates[ceiling]  # seconds one label-iteration's FLOPs take at that matmul rate
    fractions = {f"fraction_of_{p}_matmul": flops / rates[p] / seconds for p in rates}
    n = sz["matmul_n"]
    return Row(
        case=case,
        candidate=runtime.label(),
        reference=f"{CEILING_NAMES[ceiling]} n={n} ({rates[ceiling] / 1e12:.3g} TFLOP/s)",
        repeats=len(per_label_it),
        candidate_median_s=seconds,
        reference_median_s=ceiling_s,
        ratio=seconds / ceiling_s,
        candidate_s=per_label_it,
        reference_s=[ceiling_s],
        note=f"s per label-iteration ({result['iterations_per_sample']} iterations per sample); "
        f"{result['label_iterations_per_s']:.1f} label-it/s = {100 * ceiling_s / seconds:.2f}% of the "
        f"{CEILING_NAMES[ceiling]} ceiling",
        extra={
            "model": model,
            "variant": name,
            "labels": k,
            **{f"runtime_{key}": value for key, value in asdict(runtime).items()},
            "ms_per_iteration": result["ms_per_iteration"],
            "label_iterations_per_s": result["label_iterations_per_s"],
            "iterations_per_sample": result["iterations_per_sample"],
            "seconds_per_iteration_samples": result["seconds_per_iteration"],
            "ema_update_ms": result["ema_update_ms"],
            "peak_memory_bytes": result["peak_memory_bytes"],
            "captured": result["captured"],
            "backend": result["backend"],
            "flops_per_label_iteration": flops,
            "flops_counted_with": "labelwise.train.compute.label_iteration_flops (the iteration on the meta device)",
            "ceiling": CEILING_NAMES[ceiling],
            "ceiling_flops_per_s": rates[ceiling],
            "matmul_flops_per_s": rates,
            "fraction_of_ceiling": ceiling_s / seconds,
            **fractions,
            "settings": settings,
            "device_info": info,
        },
    )


def markdown_table(rows: list[dict]) -> str:
    """The case's rows (`Row.as_dict()`, as the results JSON holds them) as one Markdown table."""
    lines = [
        "| model | K | configuration | ms/it | label-it/s | % of its ceiling | % of TF32 (fp32 rows) | peak MiB |",
        "|---|---:|---|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        e = row["extra"]
        tf32 = f"{100 * e['fraction_of_tf32_matmul']:.2f}" if e["runtime_precision"] == "fp32" else ""
        peak = f"{e['peak_memory_bytes'] / 2**20:.0f}" if e["peak_memory_bytes"] is not None else ""
        lines.append(
            f"| {e['variant']} | {e['labels']} | {row['candidate']} | {e['ms_per_iteration']:.4g} | "
            f"{e['label_iterations_per_s']:.1f} | {100 * e['fraction_of_ceiling']:.2f} ({e['ceiling']}) | "
            f"{tf32} | {peak} |"
        )
    return "\n".join(lines)
