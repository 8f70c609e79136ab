"""Case engine: label-iterations/s of the packed training iteration, against the device's bf16 matmul rate.

Issue 11's one GPU command (≤ 5 minutes on one GPU):

    .venv/bin/python benchmarks/run.py engine            # CUDA; --device cpu --quick: the CPU smoke test

For each model (presets/cifar10.yaml's wcgan and dccgan: width 64, 32×32×3; wcgan batch 64 with 5
critic steps and the gradient penalty, dccgan batch 100), K ∈ {1, 10, 40, 100} labels, precision
fp32 / bf16 and packed kernel grouped / bmm (`labelwise.train.packed_layers`), it times
`labelwise.train.engine.PackedIteration` — the very iteration `train_packed` runs — with synthetic
images already on the device, in steady state after warm-up: the median over 3 windows of
label-iterations per second (K × iterations / seconds, the device synchronised at each window's
ends).  On CUDA, bmm + bf16 is also timed with the iteration captured in a CUDA graph.

The ceiling: FLOPs per label-iteration are counted, not guessed — `torch.utils.flop_counter.
FlopCounterMode` over one eager iteration at K=1 (both kernels; convolutions, matrix products and
their backward and double-backward passes) — and the reference is the same device's measured bf16
matrix product rate (n×n @ n×n, n = 8192; --quick: 256).  Each row's ratio is its seconds per
label-iteration over the seconds that label-iteration's FLOPs take at the matmul rate, so
1/ratio is the fraction of the ceiling reached (below 1 always; printed as a percentage).

Rows are printed as they are measured and, with $LABELWISE_BENCH_PARTIAL set, written there after
each one, so a run cut short still reports.  A row that fails (out of memory at K=100, say) is
recorded under "skipped" with the reason; the others go on.  After `BUDGET_S` seconds the
remaining rows are skipped, so the command ends within its time.
"""

from __future__ import annotations

import statistics
import time
import traceback

import torch
import yaml
from harness import Row

from labelwise.train.compute import count_flops  # the one FLOP counter: budget.gflop counts with it too

from .gpu import bench_device, save_partial

NAME = "engine"
DESCRIPTION = "packed training iteration: label-iterations/s for K labels, fp32/bf16, grouped/bmm, vs bf16 matmul"
SKIP_LINE = "engine: skipped (no CUDA device; use --device cpu --quick to smoke-test the code path)"
MODELS = ("wcgan", "dccgan")
KERNELS = ("grouped", "bmm")
PRECISIONS = ("fp32", "bf16")
BUDGET_S = 240.0  # seconds of this case before no new row starts: the command ends within 5 minutes


def _sizes(quick: bool) -> dict:
    if quick:
        return {
            "ks": (1, 2),
            "nets": {"width": 4, "latent_dim": 16, "batch_size": 8},
            "window_s": 0.0,
            "windows": 2,
            "warmup": 1,
            "matmul_n": 256,
            "images_per_label": 16,
        }
    return {
        "ks": (1, 10, 40, 100),
        "nets": {},
        "window_s": 0.5,
        "windows": 3,
        "warmup": 2,
        "matmul_n": 8192,
        "images_per_label": 256,
    }


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def matmul_rate(dev: torch.device, n: int, repeats: int = 5) -> tuple[float, list[float]]:
    """FLOP/s of an n×n bf16 matrix product on `dev`: the median over `repeats` timed products."""
    a = torch.randn(n, n, device=dev, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=dev, dtype=torch.bfloat16)
    for _ in range(2):
        a @ b
    times = []
    for _ in range(repeats):
        _sync(dev)
        t0 = time.perf_counter()
        for _ in range(10):
            a @ b
        _sync(dev)
        times.append((time.perf_counter() - t0) / 10)
    return 2.0 * n**3 / statistics.median(times), times


def build_iteration(
    model: str,
    settings: dict,
    k: int,
    kernel: str,
    precision: str,
    dev: torch.device,
    images_per_label: int,
    cuda_graph: bool = False,
):
    """A PackedIteration of K copies of one label's networks on synthetic images (speed does not depend
    on the weights' or the pixels' values)."""
    from labelwise import models
    from labelwise.train.engine import PackedIteration
    from labelwise.train.loop import build_networks, label_generators
    from labelwise.train.packed import PackedCritic, PackedGenerator

    gen, critic = build_networks(model, settings, 3, 32, 0, 0, "cpu")
    pg = PackedGenerator.from_networks([gen] * k, kernel=kernel).to(dev)
    pc = PackedCritic.from_networks([critic] * k, kernel=kernel).to(dev)
    betas, lr = tuple(settings["betas"]), float(settings["lr"])
    opt_g = torch.optim.Adam(pg.parameters(), lr=lr, betas=betas, capturable=cuda_graph)
    opt_d = torch.optim.Adam(pc.parameters(), lr=lr, betas=betas, capturable=cuda_graph)
    pool = torch.rand(k * images_per_label, 3, 32, 32, device=dev) * 2 - 1
    rngs = [label_generators(0, j, dev) for j in range(k)]
    pg.train()
    pc.train()
    return PackedIteration(
        pg,
        pc,
        opt_g,
        opt_d,
        pool,
        [images_per_label] * k,
        rngs,
        batch_size=int(settings["batch_size"]),
        latent_dim=int(settings["latent_dim"]),
        critic_steps=int(settings["critic_steps"]),
        wgan=models.get(model).loss == "wgan-gp",
        gp_lambda=float(settings.get("gp_lambda", 10.0)),
        precision=precision,
        cuda_graph=cuda_graph,
    )


def label_iterations_per_s(step, k: int, dev: torch.device, window_s: float, windows: int) -> list[float]:
    """Per window: K × iterations / seconds, each window at least one iteration and `window_s` long."""
    rates = []
    for _ in range(windows):
        _sync(dev)
        t0 = time.perf_counter()
        n = 0
        while True:
            step()
            n += 1
            if time.perf_counter() - t0 >= window_s:
                _sync(dev)
                seconds = time.perf_counter() - t0
                if seconds >= window_s:
                    break
        rates.append(k * n / seconds)
    return rates


def run(ctx) -> list:
    dev = bench_device(ctx, NAME, SKIP_LINE, "CIFAR-10 sizes at K=100 on a CPU would take hours")
    if dev is None:
        return []
    sizes = _sizes(ctx.quick)
    preset = yaml.safe_load((ctx.repo / "presets" / "cifar10.yaml").read_text())["models"]
    settings = {m: {**preset[m], **sizes["nets"]} for m in MODELS}
    started = time.perf_counter()
    rate, matmul_times = matmul_rate(dev, sizes["matmul_n"])
    device_name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"
    reference = f"bf16 matmul n={sizes['matmul_n']} ({rate / 1e12:.3g} TFLOP/s)"
    print(f"engine: {device_name}: {reference}", flush=True)
    rows: list[Row] = []

    flops: dict[tuple[str, str], int] = {}
    for model in MODELS:
        for kernel in KERNELS:
            step = build_iteration(model, settings[model], 1, kernel, "fp32", dev, sizes["images_per_label"])
            step()  # lazy set-up outside the count
            flops[model, kernel] = count_flops(step)
        print(
            f"engine: {model}: {flops[model, 'grouped'] / 1e9:.3g} GFLOP per label-iteration (grouped), "
            f"{flops[model, 'bmm'] / 1e9:.3g} (bmm)",
            flush=True,
        )

    variants = [(k, p, kern, False) for k in sizes["ks"] for p in PRECISIONS for kern in KERNELS]
    if dev.type == "cuda":
        variants += [(k, "bf16", "bmm", True) for k in sizes["ks"]]
    for model in MODELS:  # the model first: a run cut short still has wcgan
        for k, precision, kernel, graph in variants:
            label = f"{kernel} {precision}{' + CUDA graph' if graph else ''}"
            case = f"g.engine/{model}/K={k}"
            if time.perf_counter() - started > BUDGET_S:
                ctx.skip(f"{case}/{label}", f"time budget of {BUDGET_S:.0f} s spent")
                continue
            try:
                row = _row(
                    ctx,
                    dev,
                    model,
                    settings[model],
                    k,
                    precision,
                    kernel,
                    graph,
                    sizes,
                    flops[model, "grouped"],
                    rate,
                    reference,
                    matmul_times,
                )
            except Exception as exc:  # noqa: BLE001 - out of memory at K=100 must not end the run
                ctx.log(traceback.format_exc())
                ctx.skip(f"{case}/{label}", f"failed: {type(exc).__name__}: {str(exc)[:200]}")
                print(f"engine: {case} {label}: failed: {type(exc).__name__}", flush=True)
                continue
            finally:
                if dev.type == "cuda":
                    torch.cuda.empty_cache()
            rows.append(row)
            e = row.extra
            print(
                f"engine: {model} K={k} {label}: {e['label_iterations_per_s']:.1f} label-it/s, "
                f"{100 * e['fraction_of_bf16_matmul']:.2f}% of the bf16 matmul ceiling",
                flush=True,
            )
            save_partial(ctx, rows)
    return rows


def _row(ctx, dev, model, settings, k, precision, kernel, graph, sizes, flops, rate, reference, matmul_times) -> Row:
    step = build_iteration(model, settings, k, kernel, precision, dev, sizes["images_per_label"], cuda_graph=graph)
    warm = sizes["warmup"] + (3 if graph else 0)  # a graph is captured after 3 eager iterations
    for _ in range(warm):
        step()
    if graph and step.graph is None:
        raise RuntimeError("CUDA graph capture failed (see the log line); eager rows cover this variant")
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    rates = label_iterations_per_s(step, k, dev, sizes["window_s"], sizes["windows"])
    per_label_it = [1.0 / r for r in rates]
    ceiling_s = flops / rate  # seconds one label-iteration's FLOPs take at the bf16 matmul rate
    median_rate = 1.0 / statistics.median(per_label_it)  # so that the fraction is exactly 1/ratio
    return Row(
        case=f"g.engine/{model}/K={k}",
        candidate=f"{kernel} {precision}{' + CUDA graph' if graph else ''}",
        reference=reference,
        repeats=len(rates),
        candidate_median_s=statistics.median(per_label_it),
        reference_median_s=ceiling_s,
        ratio=statistics.median(per_label_it) / ceiling_s,
        candidate_s=per_label_it,
        reference_s=[flops / (2.0 * sizes["matmul_n"] ** 3 / t) for t in matmul_times],
        note=f"s per label-iteration; {median_rate:.1f} label-it/s = {100 * ceiling_s * median_rate:.2f}% "
        f"of the bf16 matmul ceiling",
        extra={
            "model": model,
            "labels": k,
            "precision": precision,
            "packed_kernel": kernel,
            "cuda_graph": graph,
            "label_iterations_per_s": median_rate,
            "label_iterations_per_s_windows": rates,
            "flops_per_label_iteration": flops,
            "flops_counted_with": "torch.utils.flop_counter.FlopCounterMode, K=1, grouped, fp32",
            "bf16_matmul_flops_per_s": rate,
            "fraction_of_bf16_matmul": ceiling_s * median_rate,
            "settings": settings,
            "device": str(dev),
            "device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
            "peak_memory_bytes": int(torch.cuda.max_memory_allocated(dev)) if dev.type == "cuda" else None,
        },
    )
