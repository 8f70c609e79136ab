"""Timing harness for the benchmarks: interleaved repeats, medians, paired ratios, machine facts.

Every comparison runs its reference and its candidates in the same process tree, repeat by
repeat, rotating the order within each repeat, so that slow drift of the machine (other jobs,
thermal state, page cache) hits both sides alike.  The ratio reported is the median over repeats
of candidate/reference measured in the same repeat (a paired ratio), which cancels drift better
than the ratio of the two medians; both medians are reported too.  Ratios are time ratios:
below 1 the candidate is faster.
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

Timed = Callable[[], float]  # runs once and returns the seconds that count (setup excluded)


def timed(fn: Callable[[], object]) -> Timed:
    """Wrap a plain callable so that its whole call is what is timed."""

    def run() -> float:
        t0 = time.perf_counter()
        fn()
        return time.perf_counter() - t0

    return run


@dataclass
class Row:
    case: str
    candidate: str
    reference: str
    repeats: int
    candidate_median_s: float
    reference_median_s: float
    ratio: float  # median of paired candidate/reference time ratios
    candidate_s: list = field(default_factory=list)
    reference_s: list = field(default_factory=list)
    note: str = ""
    extra: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return asdict(self)


def compare(
    case: str,
    reference: tuple[str, Timed],
    candidates: dict[str, Timed],
    repeats: int,
    warmup: int = 0,
    notes: dict[str, str] | None = None,
    log=print,
) -> list[Row]:
    """Time `reference` and each candidate `repeats` times, interleaved; one Row per candidate."""
    ref_name, ref_fn = reference
    runners = [(ref_name, ref_fn), *candidates.items()]
    for _ in range(warmup):
        for _, fn in runners:
            fn()
    times: dict[str, list[float]] = {name: [] for name, _ in runners}
    for r in range(repeats):
        shift = r % len(runners)
        for name, fn in runners[shift:] + runners[:shift]:  # rotate who goes first
            times[name].append(fn())
        log(f"  [{case}] repeat {r + 1}/{repeats}: " + ", ".join(f"{n}={times[n][-1]:.3f}s" for n, _ in runners))
    rows = []
    ref_t = times[ref_name]
    for name, _ in runners[1:]:
        cand_t = times[name]
        rows.append(
            Row(
                case=case,
                candidate=name,
                reference=ref_name,
                repeats=repeats,
                candidate_median_s=statistics.median(cand_t),
                reference_median_s=statistics.median(ref_t),
                ratio=statistics.median(c / r for c, r in zip(cand_t, ref_t)),
                candidate_s=cand_t,
                reference_s=list(ref_t),
                note=(notes or {}).get(name, ""),
            )
        )
    return rows


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo), for the results' machine record."""
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def backend_settings() -> dict:
    """The process's TF32 and cuDNN switches as they are now (fp32 convolutions and matrix products
    may run on TF32 tensor cores; cudnn.benchmark times algorithms on first use).  A switch that
    cannot be read (PyTorch ≥ 2.9 refuses a legacy read after a mix of its old and new TF32 APIs)
    is recorded as such."""
    import torch

    b = torch.backends
    switches = {
        "cudnn.benchmark": lambda: bool(b.cudnn.benchmark),
        "cudnn.allow_tf32": lambda: bool(b.cudnn.allow_tf32),
        "cudnn.deterministic": lambda: bool(b.cudnn.deterministic),
        "cuda.matmul.allow_tf32": lambda: bool(b.cuda.matmul.allow_tf32),
        "float32_matmul_precision": torch.get_float32_matmul_precision,
        "cuda.matmul.allow_bf16_reduced_precision_reduction": lambda: bool(
            b.cuda.matmul.allow_bf16_reduced_precision_reduction
        ),
        # PyTorch 2.9's names for the same switches; absent before
        "cuda.matmul.fp32_precision": lambda: getattr(b.cuda.matmul, "fp32_precision", None),
        "cudnn.fp32_precision": lambda: getattr(b.cudnn, "fp32_precision", None),
    }
    out = {}
    for name, read in switches.items():
        try:
            value = read()
        except Exception as exc:  # noqa: BLE001 - a machine fact, not worth failing the run for
            value = f"unreadable ({type(exc).__name__}: {exc})"
        if value is not None:
            out[name] = value if isinstance(value, (bool, str)) else str(value)
    return out


def machine() -> dict:
    import torch

    try:
        import snakemake

        smk = snakemake.__version__
    except Exception:  # the DAG case says so itself
        smk = None
    gpu = {}
    if torch.cuda.is_available():  # only where there is one: the CPU machine line stays as it was
        try:
            gpu = {
                "gpu": torch.cuda.get_device_name(0),
                "gpus": torch.cuda.device_count(),
                "torch_cuda": torch.version.cuda,
                "cudnn": torch.backends.cudnn.version(),
                "backend": backend_settings(),
            }
        except Exception as exc:  # noqa: BLE001 - a machine fact, not worth failing the run for
            gpu = {"gpu": f"unreadable ({exc})"}
    return {
        "cpu": cpu_model(),
        "logical_cpus": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_default_threads": torch.get_num_threads(),
        "mkldnn": torch.backends.mkldnn.is_available(),
        "cuda": torch.cuda.is_available(),
        **gpu,
        "snakemake": smk,
        "platform": platform.platform(),
        "load_average": os.getloadavg(),
    }
