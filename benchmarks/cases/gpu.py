"""Case g: a GPU, CIFAR-10-size networks, 10 labels — packed vs separate, and the GPU speed options.

Issue 7 asks for "K packed vs. K separate runs on the same device", measured on a GPU for
CIFAR-10-size networks with 10 labels, and for the speed options channels_last, torch.compile,
mixed precision (bf16 on a GPU) and data already on the device.  Everything runs on one device
(`--device`, default: CUDA when there is one; without CUDA and without `--device` the case prints
one line and is recorded as skipped).  `--device cpu --quick` runs the same code with tiny
networks: a smoke test of the code path whose figures mean nothing.

Data: 10 synthetic shards (labels 0-9) of uniform random uint8 images, 3x32x32, 1000 per label,
written with `labelwise.images.write_images` — the format training reads.  Training speed
depends neither on the pixel values nor on the number of images (a batch is drawn from images
already on the device); only the shard read at the start of a call does (~0.1 s for CIFAR-10's
5000 per label on the development CPU), and fewer images keep that fixed cost small.
Networks: presets/cifar10.yaml's `models` (width 64, latent 100; wcgan batch 64, 5 critic steps;
dccgan batch 100, 1 step).  N = 50 (wcgan) / 120 (dccgan) generator iterations per label, N0 =
10 / 20; --quick: 2 labels, width 4, N = 2 / 3, N0 = 1.

`g.packed/<model>/K=10` — whole calls of N generator iterations per label, the clock stopped
after `torch.cuda.synchronize()`, interpreter start-up excluded, after an untimed warm-up call of
each kind (CUDA context, kernel loading, cuDNN set-up):
* reference "separate, in turn": the 10 labels trained one after the other, one `train_job` of
  one label each, in this process — what one GPU does with runtime.labels_per_job 1 when the jobs
  run one at a time;
* "packed": one `train_job` of all 10 labels (and the same with channels_last);
* "separate, 10 processes at once": 10 worker processes (train_worker.py) on the same GPU, one
  label each — what the pipeline does when several jobs share one GPU; the workers are started
  and warmed up once, before the first repeat, and serve every repeat (no clock includes a
  start-up or an exit).
Both sides read the shards, build the networks and write every label's generator, log and one
final checkpoint; the ratio is packed (or concurrent) time / separate time, so speedup = 1/ratio.
`g.packed-steady/<model>/K=10` takes the same runs' difference between N and N0 iterations
((T(N) - T(N0)) / (N - N0), both timed in each repeat): seconds per generator iteration of all
10 labels with set-up, reads and writes cancelled.

`g.options/<model>` — steady-state seconds per iteration of the plain loop (benchmarks/cases/plain.py
PlainGAN, one label, the same networks) after warm-up, one change at a time, against the plain
fp32 NCHW eager loop with images, batch indices and noise on the device: channels_last; bf16
autocast (and for wcgan: bf16 with the gradient penalty's critic pass in fp32); channels_last +
bf16; cudnn.benchmark; batch indices drawn on the CPU and copied each critic step (a blocking
copy, one host-device synchronisation per critic step; the engine draws an iteration's indices at
once and copies them without blocking); images on
the host with each batch copied; and for dccgan only torch.compile (alone, with channels_last +
bf16, and mode=reduce-overhead, i.e. CUDA graphs) — wcgan's gradient penalty needs a double
backward, which compiled graphs do not support.  A variant that fails to build or warm up is left
out, one that fails while timed gets NaN; both are named in the results ("left_out").  Each bf16
variant's row also gives the relative difference of its critic loss terms from fp32 on the same
weights and batch, and each compiled variant's torch._dynamo/inductor counters after warm-up
(e.g. `cudagraph_skips` if CUDA graphs could not be used).

Every row records torch.cuda.max_memory_allocated (in-process variants: the peak of the call; the
concurrent processes: the sum of the workers' peaks, plus the device memory in use when all were
ready, CUDA contexts included) and the GPU's name.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import time
import traceback
from pathlib import Path

import numpy as np
import torch
import yaml
from harness import Row, backend_settings, compare, cpu_model

from .plain import PlainGAN

NAME = "gpu"
DESCRIPTION = (
    "GPU, CIFAR-10 size: 10 labels packed vs separate (in turn / concurrent processes); "
    "channels_last, torch.compile, bf16, data placement on the plain loop"
)
SKIP_LINE = "gpu: skipped (no CUDA device; use --device cpu to smoke-test the code path)"
WORKER = Path(__file__).with_name("train_worker.py")
MODELS = ("wcgan", "dccgan")
NEVER = 10**9  # checkpoint_every: only the final checkpoint (both sides write it)
QUICK_NETS = {"width": 4, "latent_dim": 16, "batch_size": 8}  # --quick: tiny networks, same structure


def _sizes(quick: bool) -> dict:
    if quick:
        return {
            "labels": 2,
            "images": 24,
            "iterations": {"wcgan": 2, "dccgan": 3},
            "base": {"wcgan": 1, "dccgan": 1},
            "steps": {"wcgan": 2, "dccgan": 3},
            "warmup_steps": 1,
            "worker_warmup": 1,
        }
    return {
        "labels": 10,
        "images": 1000,
        "iterations": {"wcgan": 50, "dccgan": 120},
        "base": {"wcgan": 10, "dccgan": 20},
        "steps": {"wcgan": 30, "dccgan": 100},
        "warmup_steps": 3,
        "worker_warmup": 2,
    }


def _settings(ctx) -> dict:
    preset = yaml.safe_load((ctx.repo / "presets" / "cifar10.yaml").read_text())["models"]
    models = {m: dict(preset[m]) for m in MODELS}
    if ctx.quick:
        for s in models.values():
            s.update(QUICK_NETS)
    return models


def _write_shards(ctx, labels: int, n: int) -> list[str]:
    from labelwise.images import write_images

    root = ctx.tmp / "gpu-cifar" / "shards"
    rng = np.random.default_rng(0)
    paths = []
    for label in range(labels):
        images = rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)
        path = root / f"{label}.h5"
        write_images(path, images, label=label, class_name=str(label), source="synthetic", resolution=32, channels=3)
        paths.append(str(path))
    return paths


def device_info(dev: torch.device) -> dict:
    """torch and CUDA versions, the device's name and memory, and the TF32/cuDNN switches now."""
    info = {"device": str(dev), "torch": torch.__version__, "torch_cuda": torch.version.cuda}
    if dev.type == "cuda":
        props = torch.cuda.get_device_properties(dev)
        info.update(
            device_name=torch.cuda.get_device_name(dev),
            capability=f"{props.major}.{props.minor}",
            device_memory_bytes=int(props.total_memory),
            cudnn=torch.backends.cudnn.version(),
            cuda_graph_generator_registration=hasattr(torch.cuda.CUDAGraph, "register_generator_state"),
        )
    else:
        info["device_name"] = cpu_model()
    info["backend"] = backend_settings()
    return info


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def _paired_row(
    case: str, candidate: str, reference: str, cand_t: list, ref_t: list, note: str = "", extra: dict | None = None
) -> Row:
    """A Row from already measured paired times, computed exactly as harness.compare does."""
    return Row(
        case=case,
        candidate=candidate,
        reference=reference,
        repeats=len(cand_t),
        candidate_median_s=statistics.median(cand_t),
        reference_median_s=statistics.median(ref_t),
        ratio=statistics.median(c / r if r > 0 else float("nan") for c, r in zip(cand_t, ref_t)),
        candidate_s=list(cand_t),
        reference_s=list(ref_t),
        note=note,
        extra=extra or {},
    )


def _section(ctx, part: str, fn) -> list:
    """Run one part; a failure is printed, recorded (results JSON "skipped") and the other parts go on."""
    try:
        return fn()
    except Exception as exc:  # noqa: BLE001 - one lent GPU run should bring back what it can
        ctx.log(traceback.format_exc())
        print(f"gpu: {part} failed: {type(exc).__name__}: {exc}", flush=True)
        if hasattr(ctx, "skip"):
            ctx.skip(f"{NAME}/{part}", f"failed: {type(exc).__name__}: {exc}")
        return []
    finally:
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def bench_device(ctx, name: str, skip_line: str, why_not_cpu: str):
    """The device a GPU case runs on (--device, default CUDA), or None when it is skipped: without
    CUDA unless --device is given, and on a CPU without --quick (printed and recorded, with why)."""
    requested = getattr(ctx, "device", None)
    if requested is None:
        if not torch.cuda.is_available():
            print(skip_line, flush=True)
            if hasattr(ctx, "skip"):
                ctx.skip(name, "no CUDA device")
            return None
        requested = "cuda"
    from labelwise.device import select_device

    dev = select_device(requested)  # 'cuda' without a GPU raises, naming the fix
    if dev.type == "cpu" and not ctx.quick:
        print(f"{name}: skipped ({why_not_cpu}; add --quick for the smoke test)", flush=True)
        if hasattr(ctx, "skip"):
            ctx.skip(name, "CPU device without --quick")
        return None
    return dev


def run(ctx) -> list:
    dev = bench_device(ctx, NAME, SKIP_LINE, "full CIFAR-10 sizes on a CPU would take hours")
    if dev is None:
        return []
    sizes = _sizes(ctx.quick)
    models = _settings(ctx)
    info = device_info(dev)
    ctx.log(
        f"  [gpu] device {info['device']} ({info['device_name']}); writing {sizes['labels']} synthetic "
        f"3x32x32 shards of {sizes['images']} images"
    )
    shards = _write_shards(ctx, sizes["labels"], sizes["images"])
    rows: list[Row] = []
    parts = [
        (f"packed/{model}", lambda model=model: _packed_vs_separate(ctx, dev, model, models[model], shards, sizes))
        for model in MODELS
    ]
    parts += [
        (f"options/{model}", lambda model=model: _options(ctx, dev, model, models[model], shards[0], sizes))
        for model in MODELS
    ]
    for part, fn in parts:  # the most wanted first: a run cut short still brings back those
        new = _section(ctx, part, fn)
        for row in new:
            row.extra = {**row.extra, "device_info": info, "synthetic_images_per_label": sizes["images"]}
        rows += new
        save_partial(ctx, rows)
    return rows


def save_partial(ctx, rows: list[Row]) -> None:
    """With $LABELWISE_BENCH_PARTIAL set, the rows so far are written there after each part: a
    run stopped by a time limit before run.py writes its results still leaves them."""
    path = os.environ.get("LABELWISE_BENCH_PARTIAL")
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(
            json.dumps({"rows": [r.as_dict() for r in rows], "skipped": getattr(ctx, "skipped", [])}, indent=1) + "\n"
        )


# --------------------------------------------------------------------------- packed vs separate


class _Workers:
    """K worker processes (train_worker.py, serve mode) started once and reused for every repeat:
    start-up and warm-up happen before the first run and are never timed, and no run's clock
    includes an interpreter's exit."""

    def __init__(self, ctx, specs: list[dict]):
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ctx.repo), env.get("PYTHONPATH")) if p)
        self.procs = []
        try:
            for spec in specs:
                shutil.rmtree(spec["root"], ignore_errors=True)
                self.procs.append(
                    subprocess.Popen(
                        [sys.executable, str(WORKER), json.dumps({**spec, "serve": True})],
                        stdin=subprocess.PIPE,
                        stdout=subprocess.PIPE,
                        text=True,
                        cwd=ctx.repo,
                        env=env,
                    )
                )
            self._expect("ready")
        except BaseException:
            self.close()
            raise

    def _expect(self, word: str) -> list[list[str]]:
        lines = [p.stdout.readline().split() for p in self.procs]
        bad = [(p.poll(), line) for p, line in zip(self.procs, lines) if not line or line[0] != word]
        if bad:
            raise RuntimeError(f"benchmark worker(s) did not say {word!r} (exit code, line): {bad[:3]}")
        return lines

    def run(self, dev: torch.device) -> tuple[float, list[int], int | None]:
        """One run of every worker at once: (seconds from 'go' to the last 'done', each worker's
        peak allocated bytes, device bytes in use when all were ready, CUDA contexts included)."""
        used = None
        if dev.type == "cuda":
            free, total = torch.cuda.mem_get_info(dev)
            used = int(total - free)
        t0 = time.perf_counter()
        for p in self.procs:
            p.stdin.write("go\n")
            p.stdin.flush()
        done = self._expect("done")
        seconds = time.perf_counter() - t0
        self._expect("ready")  # outputs deleted for the next run: outside the clock
        return seconds, [int(line[2]) for line in done], used

    def close(self) -> None:
        for p in self.procs:
            try:
                p.stdin.close()
            except OSError:
                pass
        for p in self.procs:
            try:
                p.wait(timeout=60)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def _generator_weights(path: Path) -> tuple[int, dict]:
    payload = torch.load(path, map_location="cpu", weights_only=True)
    return int(payload["iterations"]), payload["state_dict"]


def _check_outputs(reference: list[Path], candidate: list[Path], iterations: int) -> float:
    """Every label's generator file exists with the reference's keys and shapes and `iterations`;
    returns the largest absolute weight difference (rounding, TF32 and cuDNN kernel choice make it nonzero)."""
    diff = 0.0
    for ref_path, cand_path in zip(reference, candidate):
        (ri, rsd), (ci, csd) = _generator_weights(ref_path), _generator_weights(cand_path)
        shapes = {k: tuple(v.shape) for k, v in rsd.items()}
        if ri != iterations or ci != iterations or shapes != {k: tuple(v.shape) for k, v in csd.items()}:
            raise RuntimeError(
                f"{cand_path} does not match {ref_path}: iterations {ci} vs {ri} (want {iterations}), "
                f"or different tensors"
            )
        diff = max(
            [diff]
            + [
                float((rsd[k].double() - csd[k].double()).abs().max())
                for k in rsd
                if rsd[k].is_floating_point() and rsd[k].numel()
            ]
        )
    return diff


def _packed_vs_separate(ctx, dev: torch.device, model: str, settings: dict, shards: list[str], sizes: dict) -> list:
    from labelwise.train import Budget, Outputs, train_job

    k, n, n0 = sizes["labels"], sizes["iterations"][model], sizes["base"][model]
    labels = list(range(k))
    device = str(dev)  # e.g. cuda:0: this process and every worker use the same GPU
    work = ctx.tmp / f"gpu-{model}"
    cuda = dev.type == "cuda"

    def fresh(tag: str) -> list:
        root = work / tag
        shutil.rmtree(root, ignore_errors=True)
        return [Outputs(root / f"g{j}.pt", root / f"log{j}.csv", root / f"ckpt{j}") for j in labels]

    def separate(iterations: int, outs: list, channels_last: bool = False) -> None:
        for j, out in zip(labels, outs):  # one job per label (K=1), one after the other
            train_job(
                [shards[j]],
                model,
                settings,
                Budget(iterations=iterations, checkpoint_every=NEVER),
                0,
                [out],
                labels=[j],
                device=device,
                threads=1,
                progress_seconds=1e9,
                channels_last=channels_last,
            )

    def packed(iterations: int, outs: list, channels_last: bool = False) -> None:
        train_job(
            shards,
            model,
            settings,
            Budget(iterations=iterations, checkpoint_every=NEVER),
            0,
            outs,
            labels=labels,
            device=device,
            threads=1,
            progress_seconds=1e9,
            channels_last=channels_last,
        )

    peaks: dict[str, int] = {}
    base: dict[str, list[float]] = {}
    ready_used: list[int] = []

    def clocked(name: str, fn, iterations: int, tag: str) -> float:
        outs = fresh(tag)  # outside the clock
        if cuda:
            torch.cuda.synchronize(dev)
            torch.cuda.reset_peak_memory_stats(dev)
        t0 = time.perf_counter()
        fn(iterations, outs)
        _sync(dev)
        seconds = time.perf_counter() - t0
        if cuda:
            peaks[name] = max(peaks.get(name, 0), int(torch.cuda.max_memory_allocated(dev)))
        return seconds

    def in_process(name: str, fn, tag: str):
        def run_once() -> float:
            base.setdefault(name, []).append(clocked(name, fn, n0, f"{tag}-base"))
            return clocked(name, fn, n, tag)

        return run_once

    ref_name = f"separate: {k} one-label jobs in turn"
    packed_name = f"packed: 1 job of {k} labels"
    packed_cl = "packed, channels_last"
    conc_name = f"separate: {k} processes at once"

    pool: list[_Workers] = []

    def concurrent() -> float:
        seconds, worker_peaks, used = pool[0].run(dev)
        peaks[conc_name] = max(peaks.get(conc_name, 0), sum(worker_peaks))
        if used is not None:
            ready_used.append(used)
        return seconds

    warm = min(n0, 3)
    ctx.log(f"  [gpu] {model}: warm-up ({warm} iterations per label, each kind in this process)")
    separate(warm, fresh("warmup"))
    packed(warm, fresh("warmup"))
    packed(warm, fresh("warmup"), channels_last=True)
    shutil.rmtree(work / "warmup", ignore_errors=True)
    candidates = {
        packed_name: in_process(packed_name, packed, "packed"),
        packed_cl: in_process(packed_cl, lambda i, o: packed(i, o, channels_last=True), "packed-cl"),
    }
    ctx.log(f"  [gpu] {model}: starting and warming up {k} worker processes")
    try:  # started and warmed up once, before any clock; without them the in-process rows still run
        pool.append(
            _Workers(
                ctx,
                [
                    {
                        "mode": "separate",
                        "shards": [shards[j]],
                        "labels": [j],
                        "model": model,
                        "settings": settings,
                        "iterations": n,
                        "checkpoint_every": NEVER,
                        "threads": 1,
                        "channels_last": False,
                        "root": str(work / f"proc-{j}"),
                        "device": device,
                        "warmup_iterations": sizes["worker_warmup"],
                    }
                    for j in labels
                ],
            )
        )
        candidates[conc_name] = concurrent
    except Exception as exc:  # noqa: BLE001
        ctx.log(traceback.format_exc())
        print(f"gpu: packed/{model}: {k} concurrent processes left out: {type(exc).__name__}: {exc}", flush=True)
        if hasattr(ctx, "skip"):
            ctx.skip(f"{NAME}/packed/{model}/concurrent", f"failed: {type(exc).__name__}: {exc}")

    case = f"g.packed/{model}/K={k}"
    whole = f"{k} labels x {n} iterations, {model}{' (quick sizes)' if ctx.quick else ''}; whole calls"
    notes = {packed_name: whole, packed_cl: whole, conc_name: whole + "; worker start-up and warm-up excluded"}
    try:
        rows = compare(
            case,
            (ref_name, in_process(ref_name, separate, "sep")),
            candidates,
            repeats=ctx.repeats(3),
            log=ctx.log,
            notes=notes,
        )
    finally:
        for workers in pool:
            workers.close()

    gens = {
        name: [work / tag / f"g{j}.pt" for j in labels]
        for name, tag in ((ref_name, "sep"), (packed_name, "packed"), (packed_cl, "packed-cl"))
    }
    gens[conc_name] = [work / f"proc-{j}.last" / f"g{j}.pt" for j in labels]  # serve mode keeps the last run's there
    by_name = {row.candidate: row for row in rows}
    for row in rows:
        row.extra = {
            "model": model,
            "labels": k,
            "iterations_per_label": n,
            "settings": settings,
            "label_iterations_per_s": k * n / row.candidate_median_s,
            "reference_label_iterations_per_s": k * n / row.reference_median_s,
            "speedup": 1.0 / row.ratio if row.ratio else float("nan"),
            "peak_memory_bytes": peaks.get(row.candidate),
            "reference_peak_memory_bytes": peaks.get(ref_name),
            "outputs_identical_shapes": True,  # _check_outputs raises otherwise
            "max_abs_generator_weight_diff_vs_reference": _check_outputs(gens[ref_name], gens[row.candidate], n),
        }
        row.note += f"; {k * n / row.candidate_median_s:.0f} vs {k * n / row.reference_median_s:.0f} label-it/s"
    conc = by_name.get(conc_name)
    if conc is not None:
        conc.extra["peak_memory_is"] = "sum of the workers' max_memory_allocated"
        conc.extra["device_memory_used_at_ready_bytes"] = max(ready_used) if ready_used else None
        for name in (packed_name, packed_cl):
            vs = statistics.median(p / c for p, c in zip(by_name[name].candidate_s, conc.candidate_s))
            by_name[name].extra["ratio_vs_concurrent_processes"] = vs
        vs = by_name[packed_name].extra["ratio_vs_concurrent_processes"]
        by_name[packed_name].note += f"; vs {k} processes at once: {vs:.3f}"

    # Steady state: (T(n) - T(n0)) / (n - n0) per repeat, set-up, reads and writes cancelled.
    def marginal(name: str, whole_t: list) -> list:
        return [(t - t0) / (n - n0) for t, t0 in zip(whole_t, base[name])]

    ref_m = marginal(ref_name, by_name[packed_name].reference_s)
    for name in (packed_name, packed_cl):
        cand_m = marginal(name, by_name[name].candidate_s)
        row = _paired_row(
            f"g.packed-steady/{model}/K={k}",
            name,
            ref_name,
            cand_m,
            ref_m,
            note=f"s per iteration of all {k} labels: (T({n}) - T({n0})) / {n - n0}",
            extra={
                "model": model,
                "labels": k,
                "iterations": [n0, n],
                "label_iterations_per_s": k / statistics.median(cand_m),
                "reference_label_iterations_per_s": k / statistics.median(ref_m),
                "fixed_seconds_per_call": statistics.median(
                    t - n * m for t, m in zip(by_name[name].candidate_s, cand_m)
                ),
                "reference_fixed_seconds_per_call": statistics.median(
                    t - n * m for t, m in zip(by_name[name].reference_s, ref_m)
                ),
            },
        )
        row.extra["speedup"] = 1.0 / row.ratio if row.ratio else float("nan")
        rows.append(row)
    shutil.rmtree(work, ignore_errors=True)
    return rows


# --------------------------------------------------------------------------- speed options


def _option_variants(model: str, dev: torch.device, quick: bool) -> tuple[dict, dict]:
    variants = {
        "channels_last": {"channels_last": True},
        "bf16 autocast": {"autocast_bf16": True},
        "channels_last + bf16 autocast": {"channels_last": True, "autocast_bf16": True},
    }
    if model == "wcgan":
        variants["bf16 autocast, gradient penalty fp32"] = {"autocast_bf16": True, "gp_fp32": True}
    variants["cudnn.benchmark"] = {}
    variants["batch indices drawn on CPU, copied each critic step"] = {"cpu_indices": True}
    variants["images on host, batch copied each step"] = {"data_on_device": False}
    skipped = {}
    if model == "dccgan":
        if quick and dev.type == "cpu":
            skipped["torch.compile"] = "left out of the CPU smoke test (compiling takes minutes on a small CPU)"
        else:
            variants["torch.compile"] = {"compile": True}
            variants["torch.compile + channels_last + bf16 autocast"] = {
                "compile": True,
                "channels_last": True,
                "autocast_bf16": True,
            }
            if dev.type == "cuda":
                variants["torch.compile reduce-overhead (CUDA graphs)"] = {
                    "compile": True,
                    "compile_mode": "reduce-overhead",
                }
    else:
        skipped["torch.compile"] = "not applicable: no double backward (gradient penalty) through compiled graphs"
    return variants, skipped


def _bf16_numerics(shard, model: str, settings: dict, dev: torch.device, variants: dict) -> dict:
    """Relative difference of the critic loss (and W estimate, gradient penalty) from fp32, same weights and batch."""
    ref = PlainGAN(shard, model, settings, device=dev)
    torch.manual_seed(1)
    real = ref.real_batch()
    z = torch.randn(ref.bs, ref.latent, device=dev)
    alpha = torch.rand(ref.bs, 1, 1, 1, device=dev)
    want = ref.critic_loss(real, z, alpha)
    out = {}
    for name, opts in variants.items():
        if not opts.get("autocast_bf16") or opts.get("compile"):
            continue
        gan = PlainGAN(shard, model, settings, device=dev, **opts)
        got = gan.critic_loss(real.contiguous(memory_format=gan.fmt), z, alpha)
        out[name] = {
            term: abs(float(g.detach()) - float(w.detach())) / max(abs(float(w.detach())), 1e-12)
            for term, g, w in zip(("loss", "neg_wasserstein", "gradient_penalty"), got, want)
            if w is not None
        }
    return out


def _inductor_counters() -> dict:
    """torch._dynamo's running counters (cumulative over the process): graph breaks, recompiles,
    and inductor's, e.g. 'cudagraph_skips' when CUDA graphs were not used for a graph."""
    try:
        from torch._dynamo.utils import counters

        return {
            group: {str(k): int(v) for k, v in counters[group].items()}
            for group in ("stats", "inductor", "graph_break")
            if counters.get(group)
        }
    except Exception as exc:  # noqa: BLE001 - private API: informative only
        return {"unreadable": repr(exc)}


def _options(ctx, dev: torch.device, model: str, settings: dict, shard: str, sizes: dict) -> list:
    cuda = dev.type == "cuda"
    steps, warm = sizes["steps"][model], sizes["warmup_steps"]
    variants, skipped = _option_variants(model, dev, ctx.quick)
    ref_name = "plain fp32 NCHW eager, data on device"
    peaks: dict[str, dict] = {}

    broken: set[str] = set()

    def per_iteration(name: str, gan: PlainGAN, benchmark: bool):
        def run_once() -> float:
            if name in broken:
                return float("nan")
            previous = torch.backends.cudnn.benchmark
            torch.backends.cudnn.benchmark = benchmark
            try:
                if cuda:
                    torch.cuda.synchronize(dev)
                    torch.cuda.reset_peak_memory_stats(dev)
                    resident = torch.cuda.memory_allocated(dev)
                seconds = gan.timed_steps(steps) / steps
                if cuda:
                    peak = int(torch.cuda.max_memory_allocated(dev))
                    old = peaks.get(name, {"max_memory_allocated": 0, "peak_above_resident": 0})
                    peaks[name] = {
                        "max_memory_allocated": max(old["max_memory_allocated"], peak),
                        "peak_above_resident": max(old["peak_above_resident"], peak - resident),
                    }
                return seconds
            except Exception as exc:  # noqa: BLE001 - a candidate that breaks mid-run gets NaN, not the section
                if name == ref_name:
                    raise
                broken.add(name)
                skipped[name] = f"failed while timed: {type(exc).__name__}: {str(exc)[:300]}"
                ctx.log(f"  [gpu] {model} {name}: {skipped[name]}")
                return float("nan")
            finally:
                torch.backends.cudnn.benchmark = previous

        return run_once

    variants_built = {}
    compile_counters: dict[str, dict] = {}
    ctx.log(f"  [gpu] {model} options: building and warming up {1 + len(variants)} loops")
    ref_gan = PlainGAN(shard, model, settings, device=dev)
    ref_gan.timed_steps(warm)
    for name, opts in variants.items():
        t0 = time.perf_counter()
        try:
            gan = PlainGAN(shard, model, settings, device=dev, **opts)
            benchmark = name == "cudnn.benchmark"  # a global flag: set around this variant's runs only
            previous = torch.backends.cudnn.benchmark
            torch.backends.cudnn.benchmark = benchmark
            try:
                gan.timed_steps(warm + (2 if opts.get("compile") else 0))  # compiling (and recompiling) happens here
            finally:
                torch.backends.cudnn.benchmark = previous
            variants_built[name] = (gan, benchmark)
            if opts.get("compile"):
                compile_counters[name] = _inductor_counters()
            ctx.log(f"  [gpu] {model} {name}: built and warmed up in {time.perf_counter() - t0:.1f} s")
        except Exception as exc:  # noqa: BLE001 - leave the option out, say why
            skipped[name] = f"failed to build/warm up: {type(exc).__name__}: {str(exc)[:300]}"
            ctx.log(f"  [gpu] {model} {name}: {skipped[name]}")
    candidates = {name: per_iteration(name, gan, benchmark) for name, (gan, benchmark) in variants_built.items()}
    note = f"s per iteration, {steps} steady-state iterations per repeat"
    rows = compare(
        f"g.options/{model}",
        (ref_name, per_iteration(ref_name, ref_gan, False)),
        candidates,
        repeats=ctx.repeats(5),
        log=ctx.log,
        notes={name: note for name in candidates},
    )
    numerics = _bf16_numerics(shard, model, settings, dev, {n: variants[n] for n in variants_built})
    for row in rows:
        row.extra = {
            "model": model,
            "steps_per_repeat": steps,
            "settings": settings,
            "iterations_per_s": 1.0 / row.candidate_median_s,
            "reference_iterations_per_s": 1.0 / row.reference_median_s,
            "memory": peaks.get(row.candidate),
            "reference_memory": peaks.get(ref_name),
        }
        if row.candidate in numerics:
            row.extra["bf16_vs_fp32_rel_diff_same_batch"] = numerics[row.candidate]
        if row.candidate in compile_counters:  # e.g. cudagraph_skips: CUDA graphs not used for some graphs
            row.extra["inductor_counters_after_warmup"] = compile_counters[row.candidate]
        if row.candidate in broken:
            row.note += "; FAILED while timed (see left_out)"
    if rows:
        rows[0].extra["left_out"] = skipped
        if skipped:
            rows[0].note += "; left out: " + "; ".join(f"{k}: {v}" for k, v in skipped.items())
    return rows
