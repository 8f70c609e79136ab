"""Issue 25's reproduction report: the papers' claims measured on this CPU (`make papers`, docs/papers.md).

Four models — per-label W-CGAN and DC-CGAN and their single class-conditional counterparts, with the
same settings (config.yaml's CPU defaults: the conditional WGAN-GP takes W-CGAN's, the conditional
DCGAN DC-CGAN's) — on mnist5k and cifar10-mini, all 10 labels, seeds 0, 1, 2.  Every model gets the
same counted compute per label (`--gflop`; a conditional model the sum over the labels in its one
job, `labelwise.plan.train_settings`), with generator snapshots at SNAPSHOTS of its budget.

Trainings run `--jobs` at a time, one thread each, longest first, through the package's own
`train_job` (a job whose final checkpoint exists returns at once: a rerun only rescores).  Each job
that trains records its CPU seconds (the rate behind the wall-time projection).  Scoring, always
redone: samples, `evaluate_model` (metrics.json: label accuracy, FID, intra-FID, precision, recall in
the label classifier's features; Inception is off, its weights are not on this machine) and
`snapshot_metrics` (fid_vs_time.json, its end and stability).  Then the report: the tables and
figures under docs/ and the generated parts of docs/papers.md, between its `<!-- papers.py: NAME -->`
and `<!-- /papers.py -->` lines.  `--report` redoes only the report from the scored results.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import multiprocessing
import re
import resource
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from labelwise import models, plan  # noqa: E402
from labelwise.cli import setup_logging  # noqa: E402
from labelwise.config import load_config  # noqa: E402
from labelwise.tables import training_cells  # noqa: E402

log = logging.getLogger("labelwise.papers")

PER_LABEL = ("wcgan", "dccgan")
SINGLE = {"wcgan": "cgan", "dccgan": "cdcgan"}  # each per-label model's single conditional counterpart
MODELS = (*PER_LABEL, *SINGLE.values())
SNAPSHOTS = (0.1, 0.25, 0.5, 0.75, 1.0)
SOURCES = {"mnist5k": ("mnist5k", None), "cifar10-mini": ("cifar10", REPO.parent / "shared/data/cifar10-mini")}
DEVICES = (1, 10, 100)  # the wall-time view: N devices
DOCS = REPO / "docs"
FIGURES = DOCS / "figures"


# ----------------------------------------------------------------------------------------- the runs


CONFIG = REPO / "config.yaml"  # the models' settings (`--config`)


def settings_of(model: str) -> dict:
    """The config's settings of the model, or of the per-label model whose counterpart it is."""
    cfg = load_config(CONFIG)
    source = next((m for m, single in SINGLE.items() if single == model), model)
    return cfg["models"][source]


def budget_of(model: str, gflop: float, n_labels: int) -> dict:
    config = {
        "models": {model: settings_of(model)},
        "budget": {
            "iterations": 10**7,
            "gflop": gflop,
            "minutes": None,
            "checkpoint_every": 200,
            "snapshots": list(SNAPSHOTS),
        },
        "seed": 0,
    }
    return plan.train_settings(config, model, n_labels)["budget"]


def run_dir(out: Path, dataset: str, seed: int) -> Path:
    return out / dataset / f"seed{seed}"


def files(out: Path, dataset: str, seed: int, model: str, name) -> dict:
    """The pipeline's layout (labelwise.plan.LAYOUT) under results/papers/<dataset>/seed<s>."""
    ds = run_dir(out, dataset, seed)
    kinds = ("generator", "train_log", "checkpoints", "snapshots", "samples")
    return {k: Path(plan.layout(k, ds=ds, model=model, label=name)) for k in kinds}


def prepare(out: Path, dataset: str) -> dict[int, Path]:
    """The dataset's shards and label classifier, once, shared by every model and seed."""
    from labelwise.data.shards import prepare_dataset
    from labelwise.metrics.classifier import train_classifier

    source, root = SOURCES[dataset]
    folder = out / dataset
    if not (folder / "meta.json").is_file():
        prepare_dataset(source, folder, root=root)
    shards = {k: Path(plan.layout("shard", ds=folder, label=k)) for k in range(10)}
    classifier = Path(plan.layout("classifier", ds=folder))
    if not classifier.is_file():
        train_classifier(shards, classifier, epochs=5, seed=0)
    return shards


def training_tasks(out: Path, datasets, seeds, gflop: float) -> list[dict]:
    tasks = []
    for dataset in datasets:
        labels = list(range(10))
        for seed in seeds:
            for model in MODELS:
                budget = budget_of(model, gflop, len(labels))
                members = [None] if models.get(model).conditional else labels
                for label in members:
                    name = models.ALL if label is None else label
                    tasks.append(
                        {
                            "dataset": dataset,
                            "seed": seed,
                            "model": model,
                            "labels": labels if label is None else [label],
                            "name": name,
                            "budget": budget,
                            "settings": settings_of(model),
                            "out": str(out),
                        }
                    )
    return sorted(tasks, key=lambda t: -t["budget"]["gflop"])  # longest first: the pool ends together


def _worker_init() -> None:
    setup_logging()


def train_task(task: dict) -> dict:
    """One training job (in a worker process, one thread); its record when it trained."""
    from labelwise.train import Budget, Outputs, train_job

    out = Path(task["out"])
    shards = [Path(plan.layout("shard", ds=out / task["dataset"], label=k)) for k in task["labels"]]
    f = files(out, task["dataset"], task["seed"], task["model"], task["name"])
    record_path = f["generator"].with_suffix(".cpu.json")
    conditional = models.get(task["model"]).conditional
    before = resource.getrusage(resource.RUSAGE_SELF).ru_utime
    started = time.monotonic()
    (result,) = train_job(
        shards,
        task["model"],
        task["settings"],
        Budget(**task["budget"]),
        task["seed"],
        [Outputs(f["generator"], f["train_log"], f["checkpoints"], f["snapshots"])],
        labels=None if conditional else task["labels"],
        device="cpu",
        threads=1,
        progress_seconds=120,
    )
    if result.iterations > result.resumed_from:  # it trained: its CPU time is a measurement
        import torch

        from labelwise.train.compute import label_iteration_flops

        arch = torch.load(f["generator"], map_location="cpu", weights_only=True)["arch"]
        flops = label_iteration_flops(
            task["model"], task["settings"], arch["channels"], arch["resolution"], len(task["labels"])
        )
        record = {
            "iterations_trained": result.iterations - result.resumed_from,
            "gflop_trained": (result.iterations - result.resumed_from) * flops / 1e9,
            "cpu_seconds": resource.getrusage(resource.RUSAGE_SELF).ru_utime - before,
            "wall_seconds": time.monotonic() - started,
        }
        record_path.write_text(json.dumps(record))
    return {**task, "trained": result.iterations > result.resumed_from, "iterations": result.iterations}


def score_task(task: dict) -> dict:
    """Sample and score one model of one seed: metrics.json and fid_vs_time.json (with stability)."""
    from labelwise.metrics import evaluate_model, write_metrics
    from labelwise.metrics.snapshots import add_end_of_training, snapshot_metrics, write_snapshot_metrics
    from labelwise.sample import sample_label

    out, dataset, seed, model, samples = (
        Path(task["out"]),
        task["dataset"],
        task["seed"],
        task["model"],
        task["samples"],
    )
    labels = list(range(10))
    folder = out / dataset
    shards = {k: Path(plan.layout("shard", ds=folder, label=k)) for k in labels}
    names = plan.model_files(model, labels)
    per_name = {n: files(out, dataset, seed, model, n) for n in names}
    of_label = {k: per_name[names[0] if len(names) == 1 else k] for k in labels}
    sample_files = {k: files(out, dataset, seed, model, k)["samples"] for k in labels}
    for k in labels:
        sample_label(of_label[k]["generator"], sample_files[k], samples, seed, label=k, device="cpu", threads=1)
    common = dict(
        stats_dir=Path(plan.layout("stats_dir", ds=folder)), classifier_path=plan.layout("classifier", ds=folder)
    )
    ds = run_dir(out, dataset, seed)
    metrics = evaluate_model(model, sample_files, shards, settings={"inception": "off"}, device="cpu", **common)
    write_metrics(metrics, plan.layout("metrics", ds=ds, model=model), plan.layout("metrics_table", ds=ds, model=model))
    curve = snapshot_metrics(
        model,
        {k: of_label[k]["snapshots"] for k in labels},
        shards,
        samples_per_label=samples,
        seed=seed,
        settings={"inception": "off"},
        device="cpu",
        **common,
    )
    add_end_of_training(curve, metrics, [per_name[n]["train_log"] for n in names])
    write_snapshot_metrics(
        curve,
        plan.layout("fid_vs_time", ds=ds, model=model, ext="json"),
        plan.layout("fid_vs_time", ds=ds, model=model, ext="csv"),
    )
    return task


def run(out: Path, datasets, seeds, gflop: float, samples: int, jobs: int) -> tuple[int, int]:
    for dataset in datasets:
        prepare(out, dataset)
    tasks = training_tasks(out, datasets, seeds, gflop)
    total = sum(t["budget"]["gflop"] for t in tasks)
    done_gflop, trained, started = 0.0, 0, time.monotonic()
    context = multiprocessing.get_context("spawn")  # torch in a forked worker can deadlock
    with ProcessPoolExecutor(jobs, mp_context=context, initializer=_worker_init) as pool:
        futures = [pool.submit(train_task, t) for t in tasks]
        for n, future in enumerate(as_completed(futures), 1):
            task = future.result()
            done_gflop += task["budget"]["gflop"]
            trained += task["trained"]
            elapsed = time.monotonic() - started
            # ETA from the rate of the jobs that trained (finished ones return at once).
            rate = done_gflop / elapsed if trained else float("nan")
            eta = (total - done_gflop) / rate if trained and rate > 0 else float("nan")
            log.info(
                "[papers] training %d/%d done (%s %s seed %d %s%s): %.0f of %.0f GFLOP, %.1f GFLOP/s, ETA %s",
                n,
                len(tasks),
                task["dataset"],
                task["model"],
                task["seed"],
                f"label {task['name']}" if task["name"] != models.ALL else "all labels",
                "" if task["trained"] else ", kept",
                done_gflop,
                total,
                rate,
                "-" if math.isnan(eta) else f"{eta / 60:.0f} min",
            )
        scoring = [
            {"out": str(out), "dataset": d, "seed": s, "model": m, "samples": samples}
            for d in datasets
            for s in seeds
            for m in MODELS
        ]
        for n, future in enumerate(as_completed([pool.submit(score_task, t) for t in scoring]), 1):
            t = future.result()
            log.info("[papers] scored %d/%d (%s %s seed %d)", n, len(scoring), t["dataset"], t["model"], t["seed"])
    return trained, len(tasks)


# ----------------------------------------------------------------------------------------- the report


def load_results(out: Path, datasets, seeds) -> dict:
    """dataset -> model -> list over seeds of {metrics, curve, cpu (the training records)}."""
    results: dict = {}
    for dataset in datasets:
        for model in MODELS:
            for seed in seeds:
                ds = run_dir(out, dataset, seed)
                metrics_path = Path(plan.layout("metrics", ds=ds, model=model))
                if not metrics_path.is_file():
                    continue
                names = plan.model_files(model, range(10))
                records = []
                for n in names:
                    p = files(out, dataset, seed, model, n)["generator"].with_suffix(".cpu.json")
                    if p.is_file():
                        records.append(json.loads(p.read_text()))
                results.setdefault(dataset, {}).setdefault(model, []).append(
                    {
                        "seed": seed,
                        "metrics": json.loads(metrics_path.read_text()),
                        "metrics_path": metrics_path,
                        "curve": json.loads(
                            Path(plan.layout("fid_vs_time", ds=ds, model=model, ext="json")).read_text()
                        ),
                        "curve_path": Path(plan.layout("fid_vs_time", ds=ds, model=model, ext="json")),
                        "cpu": records,
                        "samples": [files(out, dataset, seed, model, k)["samples"] for k in range(10)],
                    }
                )
    return results


def value(run: dict, what: str):
    """One number of one run: a pooled classifier metric of metrics.json, or the stability gap."""
    c = run["metrics"]["classifier"]
    if what == "stability":
        return run["curve"]["stability"]["classifier"]["final_minus_best"]
    if what == "recall_worst":
        return min(v for v in c["recall"]["per_label"].values() if v is not None)
    if what == "is":
        return c["is"]["mean"]
    if what == "intra_fid":
        return c["fid"]["intra_fid"]
    return c[what]["pooled"]


def spread(values: list[float]) -> tuple[float, float]:
    return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else float("nan"))


def cell(values: list[float], digits: int = 3) -> str:
    mean, sd = spread(values)
    return f"{mean:.{digits}g}" if math.isnan(sd) else f"{mean:.{digits}g} ± {sd:.2g}"


LOWER_IS_BETTER = {"fid": True, "intra_fid": True, "stability": True}


def verdict(better: list[float], worse: list[float], what: str) -> tuple[str, str]:
    """(verdict, why) for "`better` beats `worse` on `what`", over seeds: holds when the means differ
    in the claimed direction by more than two standard errors of the difference, does not hold
    when they differ the other way by that much, not established otherwise."""
    lower = LOWER_IS_BETTER.get(what, False)
    (ma, sa), (mb, sb) = spread(better), spread(worse)
    gain = (mb - ma) if lower else (ma - mb)
    if len(better) < 2 or len(worse) < 2:  # one seed has no spread to weigh a difference against
        return "not established", f"difference {gain:+.3g} from one seed (no spread: run two or more)"
    se = math.sqrt(sa**2 / len(better) + sb**2 / len(worse))
    if gain > 2 * se:
        return "holds", f"better by {abs(gain):.3g} > 2 SE ({2 * se:.2g})"
    if -gain > 2 * se:
        return "does not hold at this scale", f"worse by {abs(gain):.3g} > 2 SE ({2 * se:.2g})"
    return "not established", f"difference {gain:+.3g} within 2 SE ({2 * se:.2g})"


def name(model: str) -> str:
    return models.title(model).split(" (")[0]


METRICS = (  # (key, column header)
    ("label_accuracy", "label accuracy"),
    ("fid", "classifier FID"),
    ("intra_fid", "classifier intra-FID"),
    ("precision", "precision"),
    ("recall", "recall"),
    ("recall_worst", "recall, worst label"),
    ("stability", "final − best FID"),
)


def results_table(results: dict) -> str:
    lines = [
        "| dataset | model | iterations / label | GFLOP / label | CPU s / label | "
        + " | ".join(h for _, h in METRICS)
        + " |",
        "|---|---|---:|---:|---:|" + "---:|" * len(METRICS),
    ]
    for dataset, by_model in results.items():
        for model in MODELS:
            runs = by_model.get(model, [])
            if not runs:
                continue
            _, iterations, gflop, _, _ = training_cells(runs[0]["metrics"])
            cpu = [sum(c["cpu_seconds"] for c in r["cpu"]) / 10 for r in runs if r["cpu"]]
            lines.append(
                f"| {dataset} | {name(model)} | {iterations} | {gflop} | "
                f"{cell(cpu) if cpu else 'n/a'} | "
                + " | ".join(cell([value(r, k) for r in runs]) for k, _ in METRICS)
                + " |"
            )
    return "\n".join(lines)


# ------------------------------------------------------------------ equal wall time on N devices


def rates(results: dict, dataset: str) -> dict[str, float]:
    """Measured counted GFLOP per CPU-second (one thread) of each model's training jobs; where no job of
    a model trained in a run of this script (all kept from elsewhere), per wall second of its training
    records (which count the waits of a loaded machine too)."""
    out = {}
    for model, runs in results[dataset].items():
        records = [c for r in runs for c in r["cpu"]]
        if records:
            out[model] = sum(c["gflop_trained"] for c in records) / sum(c["cpu_seconds"] for c in records)
        else:
            totals = [r["metrics"]["training"]["total"] for r in runs]
            out[model] = sum(t["gflop"] for t in totals) / sum(t["seconds"] for t in totals)
    return out


def curve_vs_compute(runs: list[dict]) -> tuple[list[float], list[float], list[float]]:
    """(GFLOP per label, mean FID over seeds, std) at the snapshot points and the end."""
    xs, means, sds = [], [], []
    per_it = runs[0]["metrics"]["training"]["flops_per_iteration"]
    n_labels = 10 if models.get(runs[0]["metrics"]["model"]).conditional else 1
    points = [p["iteration"] for p in runs[0]["curve"]["points"]]
    for i, it in enumerate(points):
        fids = [r["curve"]["points"][i]["classifier"]["fid"]["pooled"] for r in runs]
        xs.append(it * per_it / 1e9 / n_labels)
        means.append(statistics.mean(fids))
        sds.append(statistics.stdev(fids) if len(fids) > 1 else 0.0)
    return xs, means, sds


def wall_time_curves(results: dict, dataset: str, devices: int) -> dict[str, tuple[list[float], list[float]]]:
    """model -> (projected wall seconds, mean FID) with `devices` devices (one CPU core each, at the
    measured rates): per-label jobs side by side, K = ceil(L/N) labels per device trained together
    (packed, or in turn: the same rate per label on a CPU); the single network on one device."""
    speed = rates(results, dataset)
    out = {}
    for model, runs in results[dataset].items():
        gflop, fid, _ = curve_vs_compute(runs)
        if models.get(model).conditional:
            seconds = [g * 10 / speed[model] for g in gflop]  # all labels' compute on one device
        else:
            seconds = [g * math.ceil(10 / devices) / speed[model] for g in gflop]
        out[model] = (seconds, fid)
    return out


def fid_at(curve: tuple[list[float], list[float]], t: float) -> float:
    """FID of a curve at time t, linear between its points; its first point's before it (which
    flatters a model that has no snapshot that early), its last after it."""
    ts, fs = curve
    if t <= ts[0]:
        return fs[0]
    for (t0, f0), (t1, f1) in zip(zip(ts, fs), zip(ts[1:], fs[1:])):
        if t <= t1:
            return f0 + (f1 - f0) * (t - t0) / (t1 - t0)
    return fs[-1]


def overtaking(results: dict, dataset: str) -> dict[str, dict]:
    """Per per-label model: its FID and its single counterpart's when the per-label model's budget
    ends on N devices, N = 1..10 (more devices than labels change nothing); the smallest N at which
    it is lower."""
    out = {}
    for model in PER_LABEL:
        single = SINGLE[model]
        if model not in results[dataset] or single not in results[dataset]:
            continue
        rows = {}
        for n in range(1, 11):
            curves = wall_time_curves(results, dataset, n)
            t_end = curves[model][0][-1]
            rows[n] = {"seconds": t_end, "per_label": curves[model][1][-1], "single": fid_at(curves[single], t_end)}
        first = next((n for n, r in rows.items() if r["per_label"] < r["single"]), None)
        out[model] = {"rows": rows, "overtakes_at": first}
    return out


def wall_time_table(results: dict) -> str:
    lines = [
        "| dataset | per-label model | measured GFLOP/s (per-label, single) | "
        + " | ".join(f"N = {n}: wall s, FID per-label vs single" for n in DEVICES)
        + " | per-label lower from N = |",
        "|---|---|---|" + "---|" * len(DEVICES) + "---|",
    ]
    for dataset in results:
        speed = rates(results, dataset)
        for model, o in overtaking(results, dataset).items():
            cells = []
            for n in DEVICES:
                r = o["rows"][min(n, 10)]
                cells.append(f"{r['seconds']:.0f} s: {r['per_label']:.3g} vs {r['single']:.3g}")
            first = o["overtakes_at"]
            lines.append(
                f"| {dataset} | {name(model)} (single: {name(SINGLE[model])}) | "
                f"{speed.get(model, float('nan')):.1f}, {speed.get(SINGLE[model], float('nan')):.1f} | "
                + " | ".join(cells)
                + f" | {first if first else 'never (N ≤ 100)'} |"
            )
    return "\n".join(lines)


# ------------------------------------------------------------------------------------- the claims


def claims_table(results: dict) -> str:
    n_seeds = max(len(runs) for by_model in results.values() for runs in by_model.values())
    header = (
        f"| # | claim (papers' words) | measurement | dataset | result, {n_seeds} seeds (mean ± std) | verdict | why |"
    )
    lines = [header, "|---|---|---|---|---|---|---|"]

    def pair(dataset, a, b, what, digits=3):
        ra, rb = results[dataset].get(a, []), results[dataset].get(b, [])
        if not ra or not rb:
            return None
        va, vb = [value(r, what) for r in ra], [value(r, what) for r in rb]
        v, why = verdict(va, vb, what)
        return f"{name(a)} {cell(va, digits)} vs {name(b)} {cell(vb, digits)}", v, why

    def rows(number, claim, measurement, comparisons):
        for dataset in results:
            found = [(label, pair(dataset, *args)) for label, args in comparisons]
            found = [(label, p) for label, p in found if p]
            if not found:
                continue
            result = "; ".join(f"{label}: {p[0]}" if label else p[0] for label, p in found)
            verdicts = sorted({p[1] for _, p in found})
            v = verdicts[0] if len(verdicts) == 1 else "; ".join(f"{label or 'it'}: {p[1]}" for label, p in found)
            why = "; ".join(f"{label + ': ' if label else ''}{p[2]}" for label, p in found)
            lines.append(f"| {number} | {claim} | {measurement} | {dataset} | {result} | {v} | {why} |")

    rows(
        1,
        'per-label training "reduces the risk of mode collapse" compared with one conditional GAN over all labels '
        "(DC-CGAN and W-CGAN papers)",
        "recall (classifier features, pooled over labels; the share of real images covered), each per-label model "
        "against its single counterpart at equal counted compute per label",
        [(f"{name(m)}", (m, SINGLE[m], "recall")) for m in PER_LABEL],
    )
    claim = 'per-label training scales without communication ("scalable balanced training", DC-CGAN paper)'
    for dataset in results:
        for model, o in overtaking(results, dataset).items():
            first, r1, r10 = o["overtakes_at"], o["rows"][1], o["rows"][10]
            measurement = (
                f"classifier FID at equal wall time on N devices (one CPU core each, measured rates): {name(model)} "
                f"jobs side by side, {name(SINGLE[model])} on one device"
            )
            result = (
                f"N = 1: {r1['per_label']:.3g} vs {r1['single']:.3g}; "
                f"N ≥ 10: {r10['per_label']:.3g} vs {r10['single']:.3g} at {r10['seconds']:.0f} s"
            )
            if first:
                v, why = f"holds from N = {first}", f"per-label FID lower once N ≥ {first}"
            else:
                v, why = (
                    "does not hold at this scale",
                    "the single network is lower at every N (10 labels: N > 10 adds nothing)",
                )
            lines.append(f"| 2 | {claim} | {measurement} | {dataset} | {result} | {v} | {why} |")
    rows(
        3,
        'the Wasserstein loss "reduces the risk of cycling" (W-CGAN paper)',
        "final minus best classifier FID along training (snapshots at 0.1, 0.25, 0.5, 0.75 and 1 of the budget)",
        [("per-label", ("wcgan", "dccgan", "stability")), ("single", ("cgan", "cdcgan", "stability"))],
    )
    rows(
        4,
        "W-CGAN improves IS and FID over per-label DC-CGAN (W-CGAN paper)",
        "classifier FID pooled over labels (Inception IS and FID: not testable here, no Inception weights)",
        [("FID", ("wcgan", "dccgan", "fid")), ("IS (classifier)", ("wcgan", "dccgan", "is"))],
    )
    rows(
        5,
        'W-CGAN gives "better image quality" than per-label DC-CGAN (W-CGAN paper)',
        "precision (classifier features: the share of samples inside the real images' neighbourhoods); the grids",
        [("", ("wcgan", "dccgan", "precision"))],
    )
    return "\n".join(lines)


# ------------------------------------------------------------------------------------- the figures


def figures(results: dict, out_stem: str) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from labelwise.plots import metrics_comparison, model_color, samples_side_by_side, save_figure, stability_figure

    made = []

    def both(stem):
        made.extend([FIGURES / f"{stem}.png", FIGURES / f"{stem}.pdf"])
        return made[-2:]

    for dataset, by_model in results.items():
        first = {m: runs[0] for m, runs in by_model.items()}  # seed 0
        samples_side_by_side(
            {m: first[m]["samples"] for m in MODELS if m in first},
            both(f"{out_stem}_samples_{dataset}"),
            title=f"{dataset}, seed {first[MODELS[0]]['seed']}: samples of every model, one row per label",
        )
        metrics_comparison(
            [first[m]["metrics_path"] for m in MODELS if m in first],
            both(f"{out_stem}_comparison_{dataset}"),
            title=f"{dataset}, seed 0",
        )
    stability_figure(
        {d: [r["curve_path"] for runs in by_model.values() for r in runs] for d, by_model in results.items()},
        both(f"{out_stem}_stability"),
        title="Stability along training at equal counted compute per label",
    )

    fig, axes = plt.subplots(1, len(results), figsize=(5.4 * len(results), 4.0), squeeze=False)
    for ax, (dataset, by_model) in zip(axes[0], results.items()):
        for i, model in enumerate(m for m in MODELS if m in by_model):
            xs, ys, sds = curve_vs_compute(by_model[model])
            style = "--" if models.get(model).conditional else "-"
            ax.plot(xs, ys, style + "o", color=model_color(model, i), label=name(model), markersize=4)
            ax.fill_between(
                xs,
                [y - s for y, s in zip(ys, sds)],
                [y + s for y, s in zip(ys, sds)],
                color=model_color(model, i),
                alpha=0.15,
                lw=0,
            )
        ax.set_xscale("log")
        log_y(ax)
        ax.set_xlabel("training compute per label (counted GFLOP)")
        ax.set_ylabel("classifier FID, pooled (lower is better)")
        ax.set_title(
            f"{dataset}: mean ± std over {len(next(iter(by_model.values())))} seeds "
            "(single networks: their total / 10 labels)",
            fontsize=9,
        )
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, both(f"{out_stem}_fid_vs_compute"))

    fig, axes = plt.subplots(
        len(results), len(DEVICES), figsize=(4.2 * len(DEVICES), 3.6 * len(results)), squeeze=False
    )
    for row, dataset in zip(axes, results):
        speed = rates(results, dataset)
        for ax, n in zip(row, DEVICES):
            curves = wall_time_curves(results, dataset, n)
            for i, model in enumerate(m for m in MODELS if m in curves):
                ts, fs = curves[model]
                conditional = models.get(model).conditional
                ax.plot(
                    ts,
                    fs,
                    ("--" if conditional else "-") + "o",
                    color=model_color(model, i),
                    markersize=3,
                    label=name(model),
                )
                if conditional and 1 < n <= 10:  # not built: an upper bound, perfect N-way data parallelism
                    ax.plot(
                        [t / n for t in ts],
                        fs,
                        ":",
                        color=model_color(model, i),
                        lw=1,
                        label=f"{name(model)}, ideal {n}-way data parallel",
                    )
            ax.set_xscale("log")
            log_y(ax)
            ax.set_xlabel(f"wall time on N = {n} device(s) (s, projected)")
            ax.set_ylabel("classifier FID, pooled")
            ax.set_title(f"{dataset}, N = {n}" + (" (10 labels: as N = 10)" if n > 10 else ""), fontsize=9)
            ax.grid(alpha=0.3, which="both")
        row[min(1, len(row) - 1)].legend(fontsize=6)  # the N = 10 panel: its dotted lines too
        row[-1].text(
            0.98,
            0.98,
            "GFLOP/s per device:\n" + "\n".join(f"{name(m)} {v:.1f}" for m, v in speed.items()),
            transform=row[-1].transAxes,
            ha="right",
            va="top",
            fontsize=6,
            color="0.3",
        )
    fig.suptitle(
        "FID against wall time on N devices (one CPU core each, at the measured rates): per-label jobs side by "
        "side, ceil(10/N) labels per device; the single network on one device",
        fontsize=9,
    )
    fig.tight_layout()
    save_figure(fig, both(f"{out_stem}_fid_vs_walltime"))
    return made


def log_y(ax) -> None:
    """A log FID axis where the curves span more than a factor of 10 (as labelwise.plots.fid_vs_time);
    log axes labelled with plain numbers at their major ticks only."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    values = [y for line in ax.get_lines() for y in line.get_ydata() if y > 0]
    if values and max(values) / min(values) > 10:
        ax.set_yscale("log")
    for axis, scale in ((ax.xaxis, ax.get_xscale()), (ax.yaxis, ax.get_yscale())):
        if scale == "log":
            axis.set_major_locator(LogLocator(subs=(1, 2, 5)))
            axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
            axis.set_minor_formatter(NullFormatter())


def fill(document: Path, sections: dict[str, str]) -> None:
    """Replace each `<!-- papers.py: NAME -->` ... `<!-- /papers.py -->` block of `document` by its section."""
    text = document.read_text()
    for key, body in sections.items():
        pattern = re.compile(rf"(<!-- papers\.py: {re.escape(key)} -->\n).*?(<!-- /papers\.py -->)", re.S)
        if not pattern.search(text):
            raise SystemExit(f"{document}: no <!-- papers.py: {key} --> block")
        text = pattern.sub(lambda m, b=body: m.group(1) + b.rstrip() + "\n" + m.group(2), text)
    document.write_text(text)


def shown_settings(settings: dict) -> dict:
    """A model's settings as the report states them: those that are set (augment_policy with augment)."""
    return {
        k: v
        for k, v in settings.items()
        if v is not None and not (k == "augment_policy" and settings["augment"] == "none")
    }


def report(
    out: Path, datasets, seeds, gflop: float, samples: int, document: Path, stem: str, this_run: str | None
) -> None:
    results = load_results(out, datasets, seeds)
    if not results:
        raise SystemExit(f"no scored results under {out}; run without --report first")
    made = figures(results, stem)
    run_line = (
        f"{len(seeds)} seeds ({', '.join(map(str, seeds))}), {gflop:g} counted GFLOP per label, "
        f"{samples} generated images per label, snapshots at {', '.join(f'{f:g}' for f in SNAPSHOTS)} of the budget"
    )
    held_out = {
        d: next(iter(by_model.values()))[0]["metrics"]["classifier"]["held_out_accuracy"]
        for d, by_model in results.items()
    }
    run_line += "; label classifier held-out accuracy " + ", ".join(f"{d} {a:.3f}" for d, a in held_out.items())
    run_line += f". Settings ({CONFIG.name}; the single networks take their per-label counterparts'): " + "; ".join(
        f"{name(m)} " + ", ".join(f"{k} {v}" for k, v in shown_settings(settings_of(m)).items()) for m in PER_LABEL
    )
    # What the last run that trained or scored took (kept beside the results: `--report` redraws only).
    timing = out / "last_run.txt"
    if this_run is not None:
        timing.write_text(this_run)
    if timing.is_file():
        run_line += ". " + timing.read_text()
    fill(
        document,
        {
            "run": run_line,
            "claims": claims_table(results),
            "results": results_table(results),
            "walltime": wall_time_table(results),
        },
    )
    for path in made:
        log.info("[papers] figure %s", path.relative_to(REPO))
    log.info("[papers] report -> %s", document)


def main() -> None:
    global CONFIG
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", choices=sorted(SOURCES), action="append", help="repeatable; default: both")
    p.add_argument("--gflop", type=float, default=1000.0, help="counted GFLOP per label, every model")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--samples", type=int, default=200, help="generated images per label")
    p.add_argument("--jobs", type=int, default=2, help="training and scoring processes at once (one thread each)")
    p.add_argument("--out", type=Path, default=REPO / "results" / "papers")
    p.add_argument("--report", action="store_true", help="only the report, from the scored results")
    p.add_argument("--document", type=Path, default=DOCS / "papers.md")
    p.add_argument("--figures", default="papers", help="stem of the figure files under docs/figures/")
    p.add_argument("--config", type=Path, default=CONFIG, help="the config file whose models' settings are trained")
    a = p.parse_args()
    CONFIG = a.config
    setup_logging()
    datasets = a.dataset or sorted(SOURCES, reverse=True)
    started = time.monotonic()
    this_run = None
    if not a.report:
        trained, tasks = run(a.out, datasets, a.seeds, a.gflop, a.samples, a.jobs)
        cpu = sum(
            getattr(resource.getrusage(who), f)
            for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
            for f in ("ru_utime", "ru_stime")
        )
        this_run = (
            f"The last `make papers` trained {trained} of its {tasks} training jobs (the others were kept) and "
            f"took {(time.monotonic() - started) / 60:.0f} min of wall time, {cpu / 60:.0f} CPU-minutes"
        )
    report(
        a.out,
        datasets,
        a.seeds,
        a.gflop,
        a.samples,
        a.document,
        a.figures,
        this_run,
    )


if __name__ == "__main__":
    main()
