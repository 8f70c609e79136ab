"""Weak scaling of per-label training: k labels trained at once, one GPU (or core set) each.

For rules/scaling.smk: `python -m labelwise.scaling job` runs one timed `labelwise train` from
scratch and writes its job record (timestamps, host, device); `write_summary` turns the records into
one row per k (time to solution, i.e. the makespan, efficiency T1/Tk, and whether the k jobs really
overlapped); `scaling_figure` draws time to solution and efficiency against k.  The study's design
and what each piece records: docs/scaling.md.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import shutil
import socket
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from .trainlog import last_log_row

# The columns of summary.csv, in order.
SUMMARY_COLUMNS = (
    "k",
    "n_jobs",
    "makespan_s",
    "mean_job_s",
    "max_job_s",
    "mean_train_s",
    "efficiency",
    "train_efficiency",
    "base_k",
    "overlap",
    "max_concurrent",
    "start_spread_s",
    "hosts",
    "gpus",
    "device_kind",
    "threads",
)
# The columns of jobs.csv (one row per training job), in order.
JOB_COLUMNS = (
    "k",
    "slot",
    "label",
    "host",
    "device",
    "gpu_name",
    "cuda_visible_devices",
    "threads",
    "launched",
    "start",
    "end",
    "seconds",
    "train_seconds",
    "iterations",
    "loadavg_1min",
)


# --- the job wrapper --------------------------------------------------------------------------------


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).astimezone().isoformat(timespec="milliseconds")


def _device_info(requested: str | None) -> dict:
    """The device the training just used (select_device keeps its choice for the process)."""
    import torch

    from .device import select_device

    dev = select_device(requested or "auto")
    info = {"device": str(dev), "gpu_name": None, "gpu_uuid": None}
    if dev.type == "cuda":
        try:
            props = torch.cuda.get_device_properties(dev)
            info["gpu_name"] = props.name
            uuid = getattr(props, "uuid", None)
            info["gpu_uuid"] = str(uuid) if uuid else None
        except Exception:  # noqa: BLE001 - a name is a nicety; the device string is what counts
            pass
    return info


def run_job(record: str | Path, k: int, slot: int, train_args: list[str], launched: float | None = None) -> int:
    """Run `labelwise train <train_args>` in this process, timed; write the job record on success.

    Returns the training's exit status (0: record written)."""
    start = time.time()
    loadavg = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    from . import cli

    args = cli.build_parser().parse_args(["train", *train_args])
    for directory in args.checkpoints or []:  # time a run from scratch: never resume another run's checkpoint
        shutil.rmtree(directory, ignore_errors=True)
    code = cli.main(["train", *train_args])
    end = time.time()
    if code != 0:
        return code
    # `labelwise train` takes lists (several labels train packed); a timed job is one label.
    iterations, train_seconds = last_log_row(args.log[-1]) if args.log else (None, None)
    label = args.label[0] if args.label and len(args.label) == 1 else args.label
    info = {
        "format": "labelwise-scaling-job/1",
        "k": int(k),
        "slot": int(slot),
        "label": label,
        "model": args.model,
        "launched": launched,
        "start": start,
        "end": end,
        "start_iso": _iso(start),
        "end_iso": _iso(end),
        "seconds": end - start,
        "train_seconds": train_seconds,
        "iterations": iterations,
        "host": socket.gethostname(),
        **_device_info(args.device),
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "threads": args.threads,
        "pid": os.getpid(),
        "loadavg_1min": loadavg,
    }
    from .io import write_json

    write_json(record, info)
    return 0


def main(argv=None) -> int:
    """`python -m labelwise.scaling job ...` (the scaling rule's command), inside `cli.run_guarded` as
    every entry point: whatever is wrong with its options or its job is one line."""
    from . import cli

    cli.setup_logging()
    codes = []
    return cli.run_guarded(lambda: codes.append(_main(argv))) or codes[0]


def _main(argv) -> int:
    from .cli import ArgumentParser

    p = ArgumentParser(prog="python -m labelwise.scaling", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    j = sub.add_parser("job", help="run `labelwise train ARGS` (after --), timed, and write a job record")
    j.add_argument("--record", required=True, help="the job record to write (JSON)")
    j.add_argument("--k", type=int, required=True, help="the number of jobs in this job's group")
    j.add_argument("--slot", type=int, required=True, help="this job's index in its group (0..k-1)")
    j.add_argument("--launched", type=float, help="epoch seconds when the rule's shell started (before the launcher)")
    j.add_argument("train_args", nargs=argparse.REMAINDER, help="-- then the arguments of `labelwise train`")
    args = p.parse_args(argv)
    train_args = args.train_args[1:] if args.train_args[:1] == ["--"] else args.train_args
    return run_job(args.record, args.k, args.slot, train_args, launched=args.launched)


# --- summary maths -----------------------------------------------------------------------------------


def read_records(paths) -> list[dict]:
    return [json.loads(Path(p).read_text()) for p in paths]


def max_concurrent(intervals) -> int:
    """The largest number of [start, end) intervals covering one instant."""
    events = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals], key=lambda x: (x[0], x[1]))
    running = best = 0
    for _, step in events:  # at equal times an end (-1) sorts before a start: touching is not overlapping
        running += step
        best = max(best, running)
    return best


def group_stats(records: list[dict]) -> dict:
    """One k-group's numbers from its job records (see SUMMARY_COLUMNS; efficiency comes later)."""
    if not records:
        raise ValueError("a scaling group needs at least one job record")
    ks = {int(r["k"]) for r in records}
    if len(ks) != 1:
        raise ValueError(f"job records of several groups mixed: k = {sorted(ks)}")
    starts = [float(r["start"]) for r in records]
    ends = [float(r["end"]) for r in records]
    launched = [float(r["launched"]) if r.get("launched") is not None else float(r["start"]) for r in records]
    jobs = [e - s for s, e in zip(starts, ends)]
    train = [float(r["train_seconds"]) for r in records if r.get("train_seconds") is not None]
    kinds = {str(r.get("device", "cpu")).split(":")[0] for r in records}
    threads = {r.get("threads") for r in records}
    gpus = {
        (r.get("host"), r.get("gpu_uuid") or r.get("device"))
        for r in records
        if str(r.get("device", "")).startswith("cuda")
    }
    return {
        "k": ks.pop(),
        "n_jobs": len(records),
        # Time to solution: the first job launched (before any launcher) to the last one finished.
        "makespan_s": max(ends) - min(launched),
        "mean_job_s": sum(jobs) / len(jobs),
        "max_job_s": max(jobs),
        "mean_train_s": sum(train) / len(train) if train else math.nan,
        # All k jobs were running at one instant: the latest start came before the earliest end.
        "overlap": max(starts) < min(ends),
        "max_concurrent": max_concurrent(list(zip(starts, ends))),
        "start_spread_s": max(starts) - min(starts),
        "hosts": len({r.get("host") for r in records}),
        "gpus": len(gpus),
        "device_kind": kinds.pop() if len(kinds) == 1 else "mixed",
        "threads": threads.pop() if len(threads) == 1 else None,  # torch threads per job
    }


def summary_rows(groups: list[dict]) -> list[dict]:
    """Rows sorted by k, with efficiency = T(base k) / T(k) of the makespans, base k = the smallest k
    (1 when present), and train_efficiency, the same ratio of the mean training-loop times (what is
    left without process start-up, data loading and stragglers)."""

    def ratio(a, b):
        return a / b if b > 0 and math.isfinite(a) and math.isfinite(b) else math.nan

    rows = sorted((dict(g) for g in groups), key=lambda g: g["k"])
    base = rows[0]
    for row in rows:
        row["base_k"] = base["k"]
        row["efficiency"] = ratio(base["makespan_s"], row["makespan_s"])
        row["train_efficiency"] = ratio(base["mean_train_s"], row["mean_train_s"])
    return rows


def concurrency_problem(row: dict) -> str | None:
    """Why a group's time is not a k-way concurrent time, or None when it is."""
    k, n = int(row["k"]), int(row["n_jobs"])
    if n != k:
        return f"{n} job records for k = {k}"
    if not row["overlap"]:
        return f"its {k} jobs never all ran at once (at most {row['max_concurrent']} together)"
    if row["device_kind"] == "cuda" and int(row["gpus"]) < k:
        return f"its {k} jobs shared {row['gpus']} GPU(s)"
    return None


def _fmt(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.4f}"
    return "" if value is None else str(value)


def write_csv(path, rows: list[dict], columns) -> None:
    from .io import atomic_path

    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="") as f:
            w = csv.writer(f, lineterminator="\n")
            w.writerow(columns)
            for row in rows:
                w.writerow([_fmt(row.get(c)) for c in columns])


def write_summary(record_paths, summary_csv, jobs_csv=None) -> list[dict]:
    """Job records (any number of groups) -> summary.csv (one row per k) and jobs.csv (one per job)."""
    records = read_records(record_paths)
    by_k: dict[int, list[dict]] = {}
    for r in records:
        by_k.setdefault(int(r["k"]), []).append(r)
    rows = summary_rows([group_stats(rs) for rs in by_k.values()])
    write_csv(summary_csv, rows, SUMMARY_COLUMNS)
    if jobs_csv:
        jobs = sorted(records, key=lambda r: (int(r["k"]), int(r["slot"])))
        write_csv(jobs_csv, [dict(r, seconds=float(r["end"]) - float(r["start"])) for r in jobs], JOB_COLUMNS)
    return rows


def read_summary(path) -> list[dict]:
    """summary.csv back as typed rows."""
    ints = {"k", "n_jobs", "base_k", "max_concurrent", "hosts", "gpus", "threads"}
    rows = []
    with open(path, newline="") as f:
        for raw in csv.DictReader(f):
            row = {}
            for key, value in raw.items():
                if key in ints:
                    row[key] = int(value) if value else None
                elif key == "overlap":
                    row[key] = value == "true"
                elif key == "device_kind":
                    row[key] = value
                else:
                    row[key] = float(value) if value else math.nan
            rows.append(row)
    return rows


# --- the figure --------------------------------------------------------------------------------------


def scaling_figure(rows: list[dict], outputs, *, title: str | None = None, dpi: int = 150) -> None:
    """Two panels against k (log2): time to solution with the ideal flat line, and efficiency T1/Tk
    with the ideal 1.0. Groups that did not run concurrently are drawn hollow and named below."""
    from matplotlib.ticker import FixedLocator, NullLocator

    from .plots import plt, save_figure

    rows = sorted(rows, key=lambda r: r["k"])
    ks = [r["k"] for r in rows]
    base = rows[0]
    kinds = {r["device_kind"] for r in rows}
    if kinds == {"cuda"}:
        xlabel = "number of GPUs k (one label per GPU)"
    else:
        threads = {r.get("threads") for r in rows}
        threads = threads.pop() if len(threads) == 1 else None
        per = f", {threads} CPU thread{'s' if threads != 1 else ''} each" if threads else ""
        xlabel = f"concurrent training jobs k (one label per job{per})"
    problems = [(r["k"], concurrency_problem(r)) for r in rows]
    bad = {k for k, why in problems if why}

    fig, (ax_t, ax_e) = plt.subplots(1, 2, figsize=(9.6, 3.9))
    panels = (
        (
            ax_t,
            "makespan_s",
            "time to solution (s)\nfirst job launched → last job done",
            base["makespan_s"],
            f"ideal (flat at k = {base['k']})",
            "time to solution (makespan)",
        ),
        (ax_e, "efficiency", f"weak-scaling efficiency T{base['k']} / Tk", 1.0, "ideal (1.0)", "from time to solution"),
    )
    for ax, key, ylabel, ideal, ideal_label, label in panels:
        ys = [r[key] for r in rows]
        ax.plot(ks, ys, "-", color="C0", lw=1.5, zorder=2)
        good = [(k, y) for k, y in zip(ks, ys) if k not in bad]
        hollow = [(k, y) for k, y in zip(ks, ys) if k in bad]
        if good:
            ax.plot(*zip(*good), "o", color="C0", ms=6, zorder=3, label=label)
        if hollow:
            ax.plot(
                *zip(*hollow), "o", mfc="white", mec="C3", mew=1.5, ms=7, zorder=3, label="not concurrent (see below)"
            )
        for k, y in zip(ks, ys):
            if math.isfinite(y):
                ax.annotate(f"{y:.3g}", (k, y), textcoords="offset points", xytext=(0, 7), ha="center", fontsize=8)
        ax.axhline(ideal, color="0.4", ls="--", lw=1, label=ideal_label, zorder=1)
        ax.set_xscale("log", base=2)
        ax.xaxis.set_major_locator(FixedLocator(ks))
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_xticklabels([str(k) for k in ks])
        if len(ks) == 1:
            ax.set_xlim(ks[0] / 2, ks[0] * 2)
        else:
            ax.set_xlim(ks[0] / 1.4, ks[-1] * 1.4)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    # Where the time goes: a job's whole wall time, and its training loop alone (no start-up).
    for key, style, color, label in (
        ("mean_job_s", "s:", "C1", "mean wall time of one job"),
        ("mean_train_s", "^:", "C2", "mean training loop of one job"),
    ):
        ys = [r[key] for r in rows]
        if any(math.isfinite(y) for y in ys):
            ax_t.plot(ks, ys, style, color=color, ms=4, lw=1, label=label, zorder=2)
    ys = [r.get("train_efficiency", math.nan) for r in rows]
    if any(math.isfinite(y) for y in ys):
        ax_e.plot(ks, ys, "^:", color="C2", ms=4, lw=1, label="training loop only", zorder=2)
    top = max(
        [1.0] + [v for r in rows for v in (r["efficiency"], r.get("train_efficiency", math.nan)) if math.isfinite(v)]
    )
    ax_e.set_ylim(0, top * 1.2)
    times = [v for r in rows for v in (r["makespan_s"], r["mean_job_s"], r["mean_train_s"]) if math.isfinite(v)]
    ax_t.set_ylim(0, max(times) * 1.25 if times else 1)
    ax_t.legend(fontsize=7, loc="best")
    ax_e.legend(fontsize=7, loc="best")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    warnings = [f"k = {k}: {why}" for k, why in problems if why]
    if warnings:
        fig.text(
            0.01,
            -0.01,
            "Not a concurrent measurement — "
            + "; ".join(warnings)
            + ". Give the run at least k cores/GPUs at once (--cores, --resources gpu=).",
            fontsize=8,
            color="C3",
            ha="left",
            va="top",
            wrap=True,
        )
    fig.set_dpi(dpi)
    save_figure(fig, outputs)


if __name__ == "__main__":
    sys.exit(main())
