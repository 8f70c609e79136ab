"""FID along training: a model's generator snapshots (budget.snapshots) against the real statistics.

For every snapshot point reached by all labels, evaluation.samples_per_label images per label are
drawn from the snapshot with the same noise as the final samples (`sample.draw`) and compared with
the cached real statistics in every feature space by the code of metrics.json
(`evaluate.space_metrics`: pooled FID and intra-FID).  Each point carries the training wall time at
which it was taken (the mean over labels of the per-label jobs' elapsed seconds, or the conditional
model's own), and the curve ends at the final generators' FIDs from metrics.json at the training
logs' last wall time (`add_end_of_training`), wherever each job stopped.  `stability` says how far
that end lies above the curve's best point (the stability figure, `labelwise.plots.stability_figure`).
"""

from __future__ import annotations

import csv
import logging
import os
from collections.abc import Mapping, Sequence

import numpy as np

from ..device import select_device
from ..errors import LabelwiseError
from ..io import atomic_path, write_json
from ..sample import draw
from ..train.generator_files import load_snapshots, snapshot_generator
from ..trainlog import last_log_row
from .evaluate import NOTES, finite_or_none, open_spaces, settings_with_defaults, space_metrics
from .realstats import real_stats, stats_path

log = logging.getLogger("labelwise.metrics")

CSV_COLUMNS = (
    "point",
    "iteration",
    "fraction",
    "elapsed_seconds",
    "classifier_fid",
    "classifier_intra_fid",
    "inception_fid",
    "inception_intra_fid",
)


def snapshot_metrics(
    model: str,
    bundles_by_label: Mapping[int, os.PathLike],
    real_shards_by_label: Mapping[int, os.PathLike],
    *,
    stats_dir: os.PathLike,
    classifier_path: os.PathLike | None,
    samples_per_label: int,
    seed: int,
    settings: Mapping | None = None,
    device: str = "auto",
    batch_size: int = 256,
) -> dict:
    """The content of {model}/fid_vs_time.json.

    bundles_by_label: label -> snapshot bundle (`train.generator_files.write_snapshot_bundle`); for the
      conditional model every label maps to its one bundle, and the snapshots are bound per label.
    real_shards_by_label / stats_dir / classifier_path / settings: as for `evaluate.evaluate_model`.
    """
    s = settings_with_defaults(settings)
    labels = sorted(int(k) for k in bundles_by_label)
    if not labels:
        raise LabelwiseError(f"{model}: no snapshot bundles to evaluate")
    if samples_per_label < 2:
        raise LabelwiseError(
            f"{model}: FID needs at least 2 generated images per label; raise evaluation.samples_per_label"
        )
    dev = select_device(device)
    loaded: dict[str, list[dict]] = {}  # one read per bundle file (the conditional model's is shared)
    snapshots: dict[int, dict[int, dict]] = {}  # label -> iteration -> snapshot
    for label in labels:
        path = str(bundles_by_label[label])
        if path not in loaded:
            loaded[path] = load_snapshots(path)
        snapshots[label] = {int(e["iteration"]): e for e in loaded[path]}
        wrong = {e.get("label") for e in loaded[path] if "label" in e} - {label}
        if wrong:
            raise LabelwiseError(f"{path}: snapshots of label {sorted(wrong)}, given as label {label}")

    every = sorted(set().union(*(set(v) for v in snapshots.values())))
    points = [p for p in every if all(p in snapshots[k] for k in labels)]
    not_reached = [
        {
            "iteration": p,
            "fraction": _fraction(snapshots, p),
            "labels_reached": [k for k in labels if p in snapshots[k]],
        }
        for p in every
        if p not in points
    ]
    for miss in not_reached:
        log.warning(
            "[%s] snapshot at iteration %d reached by labels %s only (minutes budget): left out",
            model,
            miss["iteration"],
            miss["labels_reached"],
        )

    opened, skipped = open_spaces(s, classifier_path, device)
    if "classifier" in opened and not set(labels) <= set(opened["classifier"].labels):
        raise LabelwiseError(
            f"{opened['classifier'].path}: the classifier was trained on labels "
            f"{opened['classifier'].labels}, not all of {labels}"
        )
    real = {
        name: {k: real_stats(real_shards_by_label[k], stats_path(stats_dir, name, k), space) for k in labels}
        for name, space in opened.items()
    }

    results = []
    for p in points:
        fake: dict[str, dict[int, dict]] = {name: {} for name in opened}
        elapsed = {}
        for label in labels:
            entry = snapshots[label][p]
            gen, info = snapshot_generator(
                entry, dev, label=label, where=f"{bundles_by_label[label]} (snapshot at iteration {p})"
            )
            images = draw(gen, info, samples_per_label, seed, dev, batch_size)
            for name, space in opened.items():
                fake[name][label] = space.features(images)
            elapsed[str(label)] = float(entry["elapsed"])
        point = {
            "iteration": p,
            "fraction": _fraction(snapshots, p),
            # Per-label jobs: the mean over labels; the conditional model: its own (the same for every label).
            "elapsed_seconds": float(np.mean(list(elapsed.values()))),
            "elapsed_seconds_per_label": elapsed,
        }
        for name, space in opened.items():
            fid = space_metrics(space, real[name], fake[name], s, prc=False)["fid"]
            point[name] = {
                "fid": {"pooled": fid["pooled"], "intra_fid": fid["intra_fid"], "per_label": fid["per_label"]}
            }
        log.info(
            "[%s] snapshot at iteration %d (%.1f s): %s",
            model,
            p,
            point["elapsed_seconds"],
            ", ".join(
                f"{n} FID {point[n]['fid']['pooled']:.4g}" for n in opened if point[n]["fid"]["pooled"] is not None
            ),
        )
        results.append(point)

    return {
        "model": model,
        "labels": labels,
        "samples_per_label": int(samples_per_label),
        "seed": int(seed),
        "feature_spaces": sorted(opened),
        "skipped_spaces": skipped,
        "inception": (
            {"status": "ok", "reason": None}
            if "inception" in opened
            else {"status": "skipped", "reason": skipped.get("inception")}
        ),
        "elapsed": "training wall seconds at the snapshot (elapsed_seconds: mean over labels for per-label models)",
        "points": results,
        "not_reached": not_reached,
        "notes": {"intra_fid": NOTES["intra_fid"], "pooled": NOTES["pooled"], "fid_small_n": NOTES["fid_small_n"]},
    }


def add_end_of_training(
    result: dict, metrics: Mapping, log_paths: Sequence[os.PathLike], *, where: str = "metrics.json"
) -> dict:
    """Give `result` (from `snapshot_metrics`) its "end": where training ended, from the model's
    metrics.json (`evaluate_model`: the final generators, the same samples per label, noise and
    FID code as the snapshot points) and its training logs (one per label in `result["labels"]`
    order, or the conditional model's one): the pooled FID and intra-FID of every feature space of
    the points, at the mean over labels of the logs' last wall seconds.  In place; returned too."""
    labels = result["labels"]
    paths = list(log_paths)
    if len(paths) == 1 and len(labels) > 1:
        paths = paths * len(labels)  # the conditional model: one log for all labels
    if len(paths) != len(labels):
        raise LabelwiseError(f"{result['model']}: {len(paths)} training logs for {len(labels)} labels")
    ends = {}
    for label, path in zip(labels, paths):
        iteration, seconds = last_log_row(path)
        if iteration is None:
            raise LabelwiseError(f"{path}: a training log without rows; rerun the train stage of label {label}")
        ends[str(label)] = (iteration, seconds)
    n_generated = metrics.get("protocol", {}).get("n_generated", {})
    if any(int(n_generated.get(str(k), -1)) != result["samples_per_label"] for k in labels):
        raise LabelwiseError(
            f"{where}: evaluated with {n_generated} generated images per label, the snapshots with "
            f"{result['samples_per_label']}; rerun the evaluate stage"
        )
    end = {
        "iterations_per_label": {k: it for k, (it, _) in ends.items()},
        "elapsed_seconds": float(np.mean([t for _, t in ends.values()])),
        "elapsed_seconds_per_label": {k: t for k, (_, t) in ends.items()},
    }
    for name in result["feature_spaces"]:
        fid = (metrics.get(name) or {}).get("fid") if (metrics.get(name) or {}).get("status") == "ok" else None
        if not fid:
            raise LabelwiseError(
                f"{where}: no {name} FID, but the snapshots were evaluated in {name} features; rerun the evaluate stage"
            )
        end[name] = {
            "fid": {"pooled": fid.get("pooled"), "intra_fid": fid.get("intra_fid"), "per_label": fid.get("per_label")}
        }
    result["end"] = end
    result["stability"] = {name: stability(result, name) for name in result["feature_spaces"]}
    return result


def stability(result: dict, space: str = "classifier") -> dict | None:
    """How far from its best a model's training ended, in `space`'s pooled FID: the final generators'
    FID (the curve's end, else its last point) minus the lowest FID along the curve (snapshots and
    end).  0 when training ended at its best; a model that cycles or collapses late ends above it.
    None when the curve has no FID in that space."""
    points = [
        (p["iteration"], p.get("fraction"), p.get(space, {}).get("fid", {}).get("pooled")) for p in result["points"]
    ]
    end = result.get("end")
    if end and end.get(space):
        points.append((max(end["iterations_per_label"].values()), None, end[space]["fid"]["pooled"]))
    points = [p for p in points if p[2] is not None]
    if not points:
        return None
    final = points[-1]
    best = min(points, key=lambda p: p[2])
    return {
        "final_fid": final[2],
        "best_fid": best[2],
        "best_iteration": best[0],
        "best_fraction": best[1],
        "final_minus_best": final[2] - best[2],
        "points": len(points),
    }


def _fraction(snapshots: dict, iteration: int):
    for per_label in snapshots.values():
        if iteration in per_label:
            return finite_or_none(per_label[iteration].get("fraction", float("nan")))
    return None


def write_snapshot_metrics(result: dict, json_path: os.PathLike, csv_path: os.PathLike | None = None) -> None:
    """fid_vs_time.json, and one CSV row per snapshot point plus one for the end of training when
    `result` has it (skipped spaces: empty cells)."""
    write_json(json_path, result)
    if csv_path is not None:
        with atomic_path(csv_path) as tmp:
            with open(tmp, "w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS)
                writer.writeheader()
                end = result.get("end")
                rows = [("snapshot", p["iteration"], p["fraction"], p) for p in result["points"]]
                if end:  # iteration: the labels' largest (a minutes budget may stop them apart)
                    rows.append(("end", max(end["iterations_per_label"].values()), None, end))
                for point, iteration, fraction, p in rows:
                    row = {
                        "point": point,
                        "iteration": iteration,
                        "fraction": fraction,
                        "elapsed_seconds": p["elapsed_seconds"],
                    }
                    for name in ("classifier", "inception"):
                        fid = p.get(name, {}).get("fid", {})
                        row[f"{name}_fid"] = fid.get("pooled")
                        row[f"{name}_intra_fid"] = fid.get("intra_fid")
                    writer.writerow({k: ("" if v is None else v) for k, v in row.items()})
    log.info("[%s] FID along training -> %s", result.get("model"), json_path)
