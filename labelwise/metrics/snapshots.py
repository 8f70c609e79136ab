"""FID along training: a model's generator snapshots (budget.snapshots) against the real statistics.

For every snapshot point reached by all labels, evaluation.samples_per_label images per label are
drawn from the snapshot with the same noise as the final samples (`sample.draw`), and compared with
the cached real statistics of each label in every feature space (classifier; Inception when its
weights are present): pooled FID and intra-FID, computed by the same code as metrics.json
(`evaluate._space_metrics`).  Each point carries the training wall time at which it was taken: the
mean over labels of the per-label jobs' elapsed seconds, or the conditional model's own.
"""
from __future__ import annotations

import csv
import logging
import os
from typing import Mapping

import numpy as np

from ..device import select_device
from ..errors import LabelwiseError
from ..io import atomic_path, write_json
from ..sample import draw
from ..train.loop import load_snapshots, snapshot_generator
from .evaluate import NOTES, _num, _space_metrics, open_spaces, settings_with_defaults
from .realstats import real_stats, stats_path

log = logging.getLogger("labelwise.metrics")

CSV_COLUMNS = ("iteration", "fraction", "elapsed_seconds", "classifier_fid", "classifier_intra_fid", "inception_fid",
               "inception_intra_fid")


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

    bundles_by_label: label -> snapshot bundle (`train.loop.write_snapshot_bundle`); for the
      conditional model every label maps to its one bundle, and the snapshots are bound per label.
    real_shards_by_label / stats_dir / classifier_path / settings: as for `evaluate.evaluate_model`.
    """
    s = settings_with_defaults(settings)
    labels = sorted(int(k) for k in bundles_by_label)
    if not labels:
        raise LabelwiseError(f"{model}: no snapshot bundles to evaluate")
    if samples_per_label < 2:
        raise LabelwiseError(f"{model}: FID needs at least 2 generated images per label; raise "
                             "evaluation.samples_per_label")
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
        {"iteration": p, "fraction": _fraction(snapshots, p),
         "labels_reached": [k for k in labels if p in snapshots[k]]}
        for p in every if p not in points
    ]
    for miss in not_reached:
        log.warning("[%s] snapshot at iteration %d reached by labels %s only (minutes budget): left out", model,
                    miss["iteration"], miss["labels_reached"])

    opened, skipped = open_spaces(s, classifier_path, device)
    if "classifier" in opened and not set(labels) <= set(opened["classifier"].labels):
        raise LabelwiseError(f"{opened['classifier'].path}: the classifier was trained on labels "
                             f"{opened['classifier'].labels}, not all of {labels}")
    real = {name: {k: real_stats(real_shards_by_label[k], stats_path(stats_dir, name, k), space) for k in labels}
            for name, space in opened.items()}

    results = []
    for p in points:
        fake: dict[str, dict[int, dict]] = {name: {} for name in opened}
        elapsed = {}
        for label in labels:
            entry = snapshots[label][p]
            gen, info = snapshot_generator(entry, dev, label=label,
                                           where=f"{bundles_by_label[label]} (snapshot at iteration {p})")
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
            fid = _space_metrics(space, real[name], fake[name], s)["fid"]
            point[name] = {"fid": {"pooled": fid["pooled"], "intra_fid": fid["intra_fid"],
                                   "per_label": fid["per_label"]}}
        log.info("[%s] snapshot at iteration %d (%.1f s): %s", model, p, point["elapsed_seconds"],
                 ", ".join(f"{n} FID {point[n]['fid']['pooled']:.4g}" for n in opened if point[n]["fid"]["pooled"]
                           is not None))
        results.append(point)

    return {
        "model": model,
        "labels": labels,
        "samples_per_label": int(samples_per_label),
        "seed": int(seed),
        "feature_spaces": sorted(opened),
        "skipped_spaces": skipped,
        "inception": ({"status": "ok", "reason": None} if "inception" in opened
                      else {"status": "skipped", "reason": skipped.get("inception")}),
        "elapsed": "training wall seconds at the snapshot (elapsed_seconds: mean over labels for per-label models)",
        "points": results,
        "not_reached": not_reached,
        "notes": {"intra_fid": NOTES["intra_fid"], "pooled": NOTES["pooled"], "fid_small_n": NOTES["fid_small_n"]},
    }


def _fraction(snapshots: dict, iteration: int):
    for per_label in snapshots.values():
        if iteration in per_label:
            return _num(per_label[iteration].get("fraction", float("nan")))
    return None


def write_snapshot_metrics(result: dict, json_path: os.PathLike, csv_path: os.PathLike | None = None) -> None:
    """fid_vs_time.json, and one CSV row per snapshot point (skipped spaces: empty cells)."""
    write_json(json_path, result)
    if csv_path is not None:
        with atomic_path(csv_path) as tmp:
            with open(tmp, "w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS)
                writer.writeheader()
                for p in result["points"]:
                    row = {"iteration": p["iteration"], "fraction": p["fraction"], "elapsed_seconds": p["elapsed_seconds"]}
                    for name in ("classifier", "inception"):
                        fid = p.get(name, {}).get("fid", {})
                        row[f"{name}_fid"] = fid.get("pooled")
                        row[f"{name}_intra_fid"] = fid.get("intra_fid")
                    writer.writerow({k: ("" if v is None else v) for k, v in row.items()})
    log.info("[%s] FID along training -> %s", result.get("model"), json_path)
