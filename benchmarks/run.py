"""Run labelwise's benchmarks against references measured side by side, print and save the results.

    .venv/bin/python benchmarks/run.py [--quick] [--repeats N] [--device DEV] [case ...]

Cases (all by default): train_step, packed, shards, dag, inception, evaluate, gpu, prepare — see
docs/benchmarks.md for what each compares.  `gpu` runs on `--device` (or $LABELWISE_BENCH_DEVICE;
default: CUDA when there is one); without a CUDA device and without `--device` it is skipped (one
line says so, and the results JSON lists it under "skipped"); `--device cpu --quick` smoke-tests its
code path on a CPU.  Every figure is a median over interleaved repeats of
candidate and reference; the ratio is candidate time / reference time (below 1: the candidate is faster).
Results go to benchmarks/results/<timestamp>.json and benchmarks/results/latest.json (git-ignored).
`--quick` shrinks every case to a smoke test of about a minute; its figures are not meaningful.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

from cases import CASES  # noqa: E402
from harness import machine  # noqa: E402


class Context:
    """What cases share: the repo, a scratch directory, the config, real mnist5k shards, the sizes."""

    def __init__(self, quick: bool, repeats: int | None, tmp: Path, device: str | None = None):
        self.quick, self.tmp, self.repo = quick, tmp, REPO
        self._repeats = repeats
        self.device = device  # None: the case's own default (gpu: CUDA if available, else skipped)
        self.skipped: list[dict] = []
        self._config = None
        self._data = None

    @property
    def config(self) -> dict:
        """config.yaml, validated (loaded on first use: the gpu case does not need it, nor jsonschema)."""
        if self._config is None:
            from labelwise.config import load_config

            config = load_config(REPO / "config.yaml")
            # The cases time the training algorithm against plain loops that have no DiffAugment, no
            # generator average and one learning rate: the models' settings without those (issue 13).
            for settings in config["models"].values():
                for key, off in (("augment", "none"), ("ema", None), ("lr_g", None), ("lr_d", None)):
                    if key in settings:
                        settings[key] = off
            self._config = config
        return self._config

    def skip(self, case: str, reason: str) -> None:
        """Record that `case` (or a part of it) did not run, and why; listed in the results JSON."""
        self.skipped.append({"case": case, "reason": reason})

    def repeats(self, default: int, quick: int = 2) -> int:
        if self._repeats:
            return self._repeats
        return quick if self.quick else default

    def shard(self, label: int) -> Path:
        """A real mnist5k shard (prepared once per run with labelwise.data.prepare_dataset)."""
        if self._data is None:
            from labelwise.data import prepare_dataset

            self._data = self.tmp / "mnist5k"
            prepare_dataset("mnist5k", str(self._data))
        return self._data / "shards" / f"{label}.h5"

    @staticmethod
    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)


def _table(rows: list[dict]) -> str:
    head = ("case", "candidate", "reference", "n", "candidate s", "reference s", "ratio")
    body = [
        (
            r["case"],
            r["candidate"],
            r["reference"],
            str(r["repeats"]),
            f"{r['candidate_median_s']:.4g}",
            f"{r['reference_median_s']:.4g}",
            f"{r['ratio']:.3f}",
        )
        for r in rows
    ]
    widths = [max(len(x) for x in col) for col in zip(head, *body)]
    fmt = "  ".join(f"{{:{'<' if i < 3 else '>'}{w}}}" for i, w in enumerate(widths))
    lines = [fmt.format(*head), fmt.format(*("-" * w for w in widths))] + [fmt.format(*b) for b in body]
    notes = [f"  {r['case']} / {r['candidate']}: {r['note']}" for r in rows if r.get("note")]
    return "\n".join(lines + (["", "notes:"] + notes if notes else []))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("cases", nargs="*", help=f"cases to run (default: all): {', '.join(CASES)}")
    ap.add_argument("--quick", action="store_true", help="tiny sizes, 2 repeats: a smoke test (~1 min)")
    ap.add_argument("--repeats", type=int, help="repeats per comparison (default: per case)")
    ap.add_argument("--out", type=Path, default=HERE / "results", help="where to write the JSON results")
    ap.add_argument(
        "--device",
        default=os.environ.get("LABELWISE_BENCH_DEVICE") or None,
        help="device for the gpu case: cuda, cuda:N or cpu (default: $LABELWISE_BENCH_DEVICE, else "
        "cuda if available; without CUDA the case is skipped unless --device cpu is given)",
    )
    args = ap.parse_args(argv)
    unknown = [c for c in args.cases if c not in CASES]
    if unknown:
        ap.error(f"unknown case(s) {', '.join(unknown)}; known: {', '.join(CASES)}")
    selected = args.cases or list(CASES)

    info = machine()
    print("machine: " + ", ".join(f"{k}={v}" for k, v in info.items()), flush=True)
    started, t0 = datetime.now().astimezone(), time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix="labelwise-bench-"))
    rows = []
    try:
        ctx = Context(args.quick, args.repeats, tmp, device=args.device)
        for name in selected:
            Context.log(f"== {name}: {CASES[name].DESCRIPTION}")
            case_t0 = time.perf_counter()
            rows += [r.as_dict() for r in CASES[name].run(ctx)]
            Context.log(f"== {name} took {time.perf_counter() - case_t0:.0f} s")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    info["load_average_end"] = os.getloadavg()
    result = {
        "command": " ".join(
            [Path(sys.executable).name, "benchmarks/run.py", *(argv if argv is not None else sys.argv[1:])]
        ),
        "quick": args.quick,
        "started": started.isoformat(timespec="seconds"),
        "duration_s": round(time.perf_counter() - t0, 1),
        "machine": info,
        "rows": rows,
        "skipped": ctx.skipped,
    }
    print()
    print(_table(rows))
    print(
        f"\nmachine load average at start {info['load_average']}, at end {info['load_average_end']}; "
        f"total {result['duration_s']} s"
    )
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"{started.strftime('%Y%m%d-%H%M%S')}{'-quick' if args.quick else ''}.json"
    path.write_text(json.dumps(result, indent=1) + "\n")
    (args.out / ("latest-quick.json" if args.quick else "latest.json")).write_text(json.dumps(result, indent=1) + "\n")
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
