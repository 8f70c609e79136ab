"""Evaluate one model's generated samples against the real shards: metrics.json and a per-label CSV.

For each label, the generated samples are compared with that label's real training images in two
feature spaces: the label classifier's (always available offline) and Inception's (when its weights
are present, see `inception.locate_weights`).  Reported per label and pooled over labels: FID,
precision and recall (Kynkäänniemi et al. 2019; recall is the measure of mode collapse) in both
spaces, intra-FID (mean of per-label FIDs), KID and IS in Inception space, IS and label accuracy in
classifier space.  All maths is torch-fidelity's (`stats`).  Real-side statistics come
from the per-label cache (`realstats`), so evaluating a second model recomputes nothing real.
"""

from __future__ import annotations

import csv
import logging
import math
import os
from collections.abc import Mapping

import numpy as np

from .. import models
from ..config import section_defaults
from ..device import select_device
from ..errors import LabelwiseError
from ..images import read_images
from ..io import atomic_path, write_json
from ..training_record import record_of_samples, training_summary
from . import stats as S
from .realstats import FeatureSpace, RealStats, compute_real_stats, real_stats, stats_path

log = logging.getLogger("labelwise.metrics")

# The evaluation settings the metrics read: the config's keys with the schema's defaults (their one
# source) and rng_seed, the seed of IS shuffling and KID subsets (torch-fidelity's; not a config key).
_DEFAULTS = section_defaults("evaluation") | {"rng_seed": S.RNG_SEED}
DEFAULT_SETTINGS = {
    k: _DEFAULTS[k]
    for k in (
        "inception",
        "inception_weights",
        "is_splits",
        "kid_subsets",
        "kid_subset_size",
        "prc_k",
        "rng_seed",
        "feature_batch_size",
    )
}

NOTES = {
    "fid_small_n": (
        "FID is biased upward at small n (the bias shrinks roughly as 1/n): per-label FID from a few hundred real "
        "and generated images reads higher than a 50k-sample FID, and with fewer images than the 2048 Inception "
        "dimensions the covariances are rank-deficient. Compare per-label FIDs only at equal n, reported beside them."
    ),
    "kid_subset_size": (
        "KID subsets are min(kid_subset_size, n_real, n_generated) images per comparison (torch-fidelity cannot draw "
        "a subset larger than a set); KID stays unbiased at any subset size, small subsets only raise its std."
    ),
    "intra_fid": "intra_fid is the mean of the per-label FIDs (intra-class FID).",
    "precision_recall": (
        "precision and recall: Kynkäänniemi et al. 2019 (torch-fidelity's prc_features_to_metric) in the FID "
        "features, each image's ball reaching its prc_k-th nearest neighbour in its own set. Precision: the share of "
        "generated images inside some real image's ball (quality); recall: the share of real images inside some "
        "generated image's ball (coverage: a collapsed generator has low recall). Both sets of a comparison have "
        "the same size (prc_n): the larger is cut to a random subset (rng_seed) of the smaller's size, as in the "
        "paper; null where prc_n <= prc_k."
    ),
    "pooled": (
        "pooled: all labels' generated samples against all labels' real images, in the label proportions of the "
        "inputs (real: shard sizes; generated: samples per label)."
    ),
    "classifier": (
        "classifier space: a small CNN trained on the same real training images (minus a held-out part) that form "
        "the reference; its held-out accuracy bounds how far its label accuracy can be trusted. Its IS is at most the "
        "number of labels."
    ),
}


def settings_with_defaults(settings: Mapping | None) -> dict:
    """DEFAULT_SETTINGS overridden by `settings`; other keys (the config's `evaluation` section also
    holds sampling keys, and the schema already rejects unknown ones) are ignored."""
    merged = dict(DEFAULT_SETTINGS)
    merged.update(
        {
            k: v
            for k, v in (settings or {}).items()
            if k in DEFAULT_SETTINGS and (v is not None or k == "inception_weights")
        }
    )
    if merged["inception_weights"] == "":
        merged["inception_weights"] = None
    return merged


def open_spaces(
    settings: Mapping | None = None, classifier_path: os.PathLike | None = None, device: str = "auto"
) -> tuple[dict[str, FeatureSpace], dict[str, str]]:
    """The feature spaces to evaluate in, and the reason for each one that is skipped.

    Raises LabelwiseError for evaluation.inception 'required' without weights, and for weights or a
    classifier file that is present but unusable.
    """
    s = settings_with_defaults(settings)
    dev = select_device(device)
    spaces: dict[str, FeatureSpace] = {}
    skipped: dict[str, str] = {}
    if classifier_path is not None:
        from .classifier import ClassifierSpace

        spaces["classifier"] = ClassifierSpace(classifier_path, device=dev)
    else:
        skipped["classifier"] = "no classifier weights given"
    if s["inception"] == "off":  # checked here too so that 'off' never even imports torch-fidelity's network
        skipped["inception"] = "evaluation.inception is 'off'"
    else:
        from .inception import InceptionSpace

        space, reason = InceptionSpace.from_settings(
            s["inception"], s["inception_weights"], device=dev, batch_size=s["feature_batch_size"]
        )
        if space is None:
            skipped["inception"] = reason
            log.warning("skipping Inception metrics: %s", reason)
        else:
            spaces["inception"] = space
    return spaces, skipped


def finite_or_none(x) -> float | None:
    """JSON has no NaN/inf: a metric that is not finite is recorded as null."""
    x = float(x)
    return x if math.isfinite(x) else None


def _reference(space: FeatureSpace, label: int, shard, stats_dir) -> RealStats:
    if stats_dir is None:
        return compute_real_stats(shard, space)
    return real_stats(shard, stats_path(stats_dir, space.name, label), space)


def evaluate_model(
    model: str,
    samples_by_label: Mapping[int, os.PathLike],
    real_shards_by_label: Mapping[int, os.PathLike],
    *,
    stats_dir: os.PathLike | None = None,
    classifier_path: os.PathLike | None = None,
    settings: Mapping | None = None,
    device: str = "auto",
    spaces: tuple[dict[str, FeatureSpace], dict[str, str]] | None = None,
) -> dict:
    """The content of {model}/metrics.json for generated samples against real training shards.

    samples_by_label / real_shards_by_label: label -> HDF5 image file (same labels in both).
    stats_dir: real-statistics cache root, files at {stats_dir}/{space}/{label}.npz (reused when
      valid, written when absent); None computes them in memory.
    classifier_path: weights from `train_classifier`; None skips the classifier metrics.
    settings: `DEFAULT_SETTINGS` keys (the config's `evaluation` section); spaces: feature spaces
      already opened with `open_spaces` (to share them between models), else opened here.
    """
    s = settings_with_defaults(settings)
    labels = sorted(int(k) for k in samples_by_label)
    if not labels:
        raise LabelwiseError(f"{model}: no generated sample files to evaluate")
    if labels != sorted(int(k) for k in real_shards_by_label):
        raise LabelwiseError(
            f"{model}: generated samples for labels {labels} but real shards for labels "
            f"{sorted(real_shards_by_label)}; evaluate the same labels on both sides"
        )
    opened, skipped = spaces if spaces is not None else open_spaces(s, classifier_path, device)
    if "classifier" in opened and not set(labels) <= set(opened["classifier"].labels):
        clf = opened["classifier"]
        raise LabelwiseError(
            f"{clf.path}: the classifier was trained on labels {clf.labels}, not all of {labels}; "
            "retrain it on the selected labels (delete it and rerun)"
        )

    generated: dict[int, np.ndarray] = {}
    trained: dict[str, dict] = {}
    n_real: dict[str, int] = {}
    class_names: dict[str, str] = {}
    for label in labels:
        path, shard = samples_by_label[label], real_shards_by_label[label]
        images, sample_attrs = read_images(path, expect={"label": label})
        trained[str(label)] = record_of_samples(sample_attrs, path)
        real_images, attrs = read_images(shard, verify=False)  # checksums are verified where features are made
        if len(images) < 2:
            raise LabelwiseError(
                f"{path}: {len(images)} generated image(s) for label {label}; FID/KID/IS need at "
                "least 2: raise evaluation.samples_per_label and rerun sampling"
            )
        if images.shape[1] != real_images.shape[1]:
            raise LabelwiseError(
                f"{path}: {images.shape[1]}-channel samples but the real shard {shard} has {real_images.shape[1]} "
                "channels; sample from the generator trained on this dataset"
            )
        generated[label] = images
        n_real[str(label)] = int(len(real_images))
        class_names[str(label)] = str(attrs.get("class_name", label))

    per_space: dict[str, dict] = {}
    for name, space in opened.items():
        real = {label: _reference(space, label, real_shards_by_label[label], stats_dir) for label in labels}
        fake = {label: space.features(generated[label]) for label in labels}
        per_space[name] = space_metrics(space, real, fake, s)

    out: dict = {
        "model": model,
        "protocol": {
            "reference": "training split",
            "labels": labels,
            "class_names": class_names,
            "n_real": n_real,
            "n_generated": {str(k): int(len(v)) for k, v in generated.items()},
            "inception_weights": str(opened["inception"].weights_path) if "inception" in opened else None,
            "inception_weights_sha256": opened["inception"].sha256 if "inception" in opened else None,
            "feature_spaces": sorted(opened),
            "is_splits": int(s["is_splits"]),
            "kid_subsets": int(s["kid_subsets"]),
            "kid_subset_size": int(s["kid_subset_size"]),
            "prc_k": int(s["prc_k"]),
            "prc_n": next(iter(per_space.values()))["prc_n"] if per_space else None,
            "rng_seed": int(s["rng_seed"]),
            "notes": NOTES,
        },
        "training": training_summary(trained, one_network=model in models.REGISTRY and models.get(model).conditional),
    }
    if "classifier" in opened:
        clf = opened["classifier"]
        m = per_space["classifier"]
        logits = m.pop("_logits")
        acc = {}
        correct = total = 0
        for label in labels:
            pred = np.asarray(clf.labels)[logits[label].argmax(axis=1)]
            acc[str(label)] = float(np.mean(pred == label))
            correct += int(np.sum(pred == label))
            total += len(pred)
        out["classifier"] = {
            "status": "ok",
            "weights": str(clf.path),
            "held_out_accuracy": clf.held_out_accuracy,
            "n_held_out": clf.info.get("n_held_out"),
            "label_accuracy": {"pooled": correct / total, "per_label": acc},
            "fid": m["fid"],
            "is": m["is"],
            "precision": m["precision"],
            "recall": m["recall"],
        }
    else:
        out["classifier"] = {"status": "skipped", "reason": skipped.get("classifier", "not requested")}
    if "inception" in opened:
        m = per_space["inception"]
        m.pop("_logits")
        out["inception"] = {
            "status": "ok",
            "reason": None,
            "is": m["is"],
            "fid": m["fid"],
            "kid": m["kid"],
            "precision": m["precision"],
            "recall": m["recall"],
        }
    else:
        out["inception"] = {"status": "skipped", "reason": skipped.get("inception", "not requested")}
    return out


def space_metrics(
    space: FeatureSpace, real: dict[int, RealStats], fake: dict[int, dict], s: dict, *, prc: bool = True
) -> dict:
    """One feature space's metrics of the generated features `fake` against the real statistics: FID
    (per label, pooled, intra-FID), precision and recall (unless `prc` is False), IS, KID in the
    Inception space; metrics.json's and the snapshots' FIDs."""
    labels = sorted(real)
    fid = {}
    for label in labels:
        fid[str(label)] = finite_or_none(
            S.frechet_distance(real[label].gaussian, S.gaussian_stats(fake[label]["pool"]))
        )
    real_pool = np.concatenate([real[k].features for k in labels])
    fake_pool = np.concatenate([fake[k]["pool"] for k in labels])
    finite = [v for v in fid.values() if v is not None]
    # One label: pooled is the same comparison; skip a second 2048-d eigendecomposition (seconds on a CPU).
    pooled_fid = (
        fid[str(labels[0])] if len(labels) == 1 else finite_or_none(S.frechet_distance_features(real_pool, fake_pool))
    )
    result = {
        "fid": {
            "pooled": pooled_fid,
            "intra_fid": finite_or_none(np.mean(finite)) if len(finite) == len(fid) else None,
            "per_label": fid,
            "n_real": {str(k): real[k].n for k in labels},
            "n_generated": {str(k): int(len(fake[k]["pool"])) for k in labels},
        },
        "is": S.inception_score(
            np.concatenate([fake[k]["logits"] for k in labels]), splits=s["is_splits"], seed=s["rng_seed"]
        ),
        "_logits": {k: fake[k]["logits"] for k in labels},
    }
    if prc:
        prc_args = dict(k=s["prc_k"], seed=s["rng_seed"])
        per_label = {str(k): S.precision_recall(real[k].features, fake[k]["pool"], **prc_args) for k in labels}
        pooled = S.precision_recall(real_pool, fake_pool, **prc_args)
        for key in ("precision", "recall"):
            result[key] = {"pooled": pooled[key], "per_label": {k: v[key] for k, v in per_label.items()}}
        result["prc_n"] = {"pooled": pooled["n"], "per_label": {k: v["n"] for k, v in per_label.items()}}
    if space.name == "inception":
        kid_args = dict(subset_size=s["kid_subset_size"], subsets=s["kid_subsets"], seed=s["rng_seed"])
        pooled = S.kernel_distance(real_pool, fake_pool, **kid_args)
        per_label = {str(k): S.kernel_distance(real[k].features, fake[k]["pool"], **kid_args) for k in labels}
        result["kid"] = {**pooled, "per_label": per_label}
    return result


CSV_COLUMNS = (
    "label",
    "class_name",
    "n_real",
    "n_generated",
    "label_accuracy",
    "classifier_fid",
    "classifier_precision",
    "classifier_recall",
    "inception_fid",
    "inception_precision",
    "inception_recall",
    "kid_mean",
    "kid_std",
    "kid_subset_size",
)


def per_label_rows(metrics: dict) -> list[dict]:
    p = metrics["protocol"]
    clf = metrics.get("classifier", {})
    inc = metrics.get("inception", {})
    rows = []
    for label in p["labels"]:
        k = str(label)
        kid = inc.get("kid", {}).get("per_label", {}).get(k, {}) if inc.get("status") == "ok" else {}
        rows.append(
            {
                "label": label,
                "class_name": p["class_names"].get(k, k),
                "n_real": p["n_real"].get(k),
                "n_generated": p["n_generated"].get(k),
                "label_accuracy": clf.get("label_accuracy", {}).get("per_label", {}).get(k),
                "classifier_fid": clf.get("fid", {}).get("per_label", {}).get(k),
                "classifier_precision": clf.get("precision", {}).get("per_label", {}).get(k),
                "classifier_recall": clf.get("recall", {}).get("per_label", {}).get(k),
                "inception_fid": inc.get("fid", {}).get("per_label", {}).get(k),
                "inception_precision": inc.get("precision", {}).get("per_label", {}).get(k),
                "inception_recall": inc.get("recall", {}).get("per_label", {}).get(k),
                "kid_mean": kid.get("mean"),
                "kid_std": kid.get("std"),
                "kid_subset_size": kid.get("subset_size"),
            }
        )
    return rows


def write_per_label_csv(metrics: dict, path: os.PathLike) -> None:
    """One row per label; metrics that were skipped are empty cells."""
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS)
            writer.writeheader()
            for row in per_label_rows(metrics):
                writer.writerow({k: ("" if v is None else v) for k, v in row.items()})


def write_metrics(metrics: dict, json_path: os.PathLike, csv_path: os.PathLike | None = None) -> None:
    write_json(json_path, metrics)
    if csv_path is not None:
        write_per_label_csv(metrics, csv_path)
    log.info("[%s] metrics -> %s", metrics.get("model"), json_path)
