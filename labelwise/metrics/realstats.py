"""Real-image reference statistics per dataset × label × feature space, cached in an .npz file.

The real side of every FID/KID is the same for all models and all reruns, so it is computed once
per label and feature space (Inception, classifier) and stored: mean, covariance and the features
themselves (KID and the pooled-over-labels FID need the features, not just the moments).  The file
records what makes it valid — feature space, extractor identity (weights sha256), the shard's
sha256 and n — and a cached file whose record disagrees with the current shard or extractor is
recomputed rather than silently reused.  In the pipeline the file is a rule output,
results/{dataset}/stats/{space}/{label}.npz (see `stats_path`).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from ..data.shards import read_shard_file
from ..errors import LabelwiseError
from ..images import read_attrs
from ..io import atomic_path
from ..plan import layout
from .stats import gaussian_stats

log = logging.getLogger("labelwise.metrics")

FORMAT = "labelwise-real-stats/1"


class FeatureSpace(Protocol):
    """What the metrics need of a feature extractor (InceptionSpace, ClassifierSpace)."""

    name: str  # "inception" | "classifier"
    identity: dict  # plain values that make two feature sets comparable (extractor, weights sha256)

    def features(self, images: np.ndarray) -> dict[str, np.ndarray]:
        """uint8 N×C×H×W -> {'pool': (N, D) features for FID/KID, 'logits': (N, K) for IS}."""


@dataclass
class RealStats:
    features: np.ndarray  # (n, D) float32
    mu: np.ndarray  # (D,) float64
    sigma: np.ndarray  # (D, D) float64
    space: str
    identity: dict
    label: int | None
    class_name: str | None
    channels: int | None
    shard: str
    shard_sha256: str | None
    n: int = field(init=False)

    def __post_init__(self):
        self.n = int(len(self.features))

    @property
    def gaussian(self) -> dict:
        return {"mu": self.mu, "sigma": self.sigma}


def stats_path(stats_dir: str | os.PathLike, space: str, label: int) -> Path:
    """The pipeline's file of `space` and `label` in `stats_dir` (labelwise.plan.LAYOUT)."""
    return Path(layout("stats", stats_dir=stats_dir, space=space, label=int(label)))


def compute_real_stats(shard_path: str | os.PathLike, space: FeatureSpace) -> RealStats:
    """Extract `space` features of every image in the shard and their mean and covariance."""
    images, attrs = read_shard_file(shard_path)  # trusted only through its dataset's meta.json
    if len(images) < 2:
        raise LabelwiseError(
            f"{shard_path}: {len(images)} image(s); FID/KID need at least 2 real images per label: "
            "select labels that have images, or use a larger dataset"
        )
    feats = np.asarray(space.features(images)["pool"], np.float32)
    g = gaussian_stats(feats)
    return RealStats(
        features=feats,
        mu=g["mu"],
        sigma=g["sigma"],
        space=space.name,
        identity=dict(space.identity),
        label=attrs.get("label"),
        class_name=attrs.get("class_name"),
        channels=int(images.shape[1]),
        shard=str(shard_path),
        shard_sha256=attrs.get("sha256"),
    )


def save_real_stats(path: str | os.PathLike, stats: RealStats) -> None:
    meta = {
        "format": FORMAT,
        "space": stats.space,
        "identity": stats.identity,
        "label": stats.label,
        "class_name": stats.class_name,
        "channels": stats.channels,
        "n": stats.n,
        "feature_dim": int(stats.features.shape[1]),
        "shard": stats.shard,
        "shard_sha256": stats.shard_sha256,
    }
    with atomic_path(path) as tmp:
        # An open file handle: np.savez would otherwise append '.npz' to the temporary name.
        with open(tmp, "wb") as f:
            np.savez(f, features=stats.features, mu=stats.mu, sigma=stats.sigma, meta=np.array(json.dumps(meta)))


def load_real_stats(path: str | os.PathLike) -> RealStats:
    """Read a file written by `save_real_stats` (no pickles); LabelwiseError naming it if unusable."""
    path = Path(path)
    fix = "delete it; the next evaluation (or snakemake) recomputes it from the shard"
    if not path.is_file():
        raise LabelwiseError(f"{path}: real-image statistics file not found; rerun the stage that writes it")
    try:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            features, mu, sigma = z["features"], z["mu"], z["sigma"]
    except Exception as exc:  # zip, key, json or dtype trouble all mean: not a good stats file
        raise LabelwiseError(f"{path}: unreadable real-image statistics ({type(exc).__name__}: {exc}); {fix}") from None
    d = features.shape[1] if features.ndim == 2 else -1
    if (
        meta.get("format") != FORMAT
        or features.ndim != 2
        or meta.get("n") != len(features)
        or mu.shape != (d,)
        or sigma.shape != (d, d)
    ):
        raise LabelwiseError(
            f"{path}: not a complete {FORMAT} file (format {meta.get('format')!r}, "
            f"features {features.shape}, n {meta.get('n')}); {fix}"
        )
    return RealStats(
        features=features,
        mu=mu,
        sigma=sigma,
        space=meta["space"],
        identity=meta["identity"],
        label=meta.get("label"),
        class_name=meta.get("class_name"),
        channels=meta.get("channels"),
        shard=meta.get("shard"),
        shard_sha256=meta.get("shard_sha256"),
    )


def write_real_stats(shard_path: str | os.PathLike, out_path: str | os.PathLike, space: FeatureSpace) -> RealStats:
    """Compute and write the stats file unconditionally (the Snakemake rule's job)."""
    stats = compute_real_stats(shard_path, space)
    save_real_stats(out_path, stats)
    log.info("[%s label %s] real statistics of %d images -> %s", space.name, stats.label, stats.n, out_path)
    return stats


def _stale(stats: RealStats, shard_path, space: FeatureSpace) -> str | None:
    if stats.space != space.name:
        return f"it is for feature space {stats.space!r}, not {space.name!r}"
    if stats.identity != dict(space.identity):
        return f"it was computed with {stats.identity}, not {dict(space.identity)}"
    attrs = read_attrs(shard_path)
    if stats.shard_sha256 != attrs.get("sha256"):
        return f"the shard {shard_path} changed since (sha256 {str(attrs.get('sha256'))[:12]}...)"
    return None


def real_stats(shard_path: str | os.PathLike, out_path: str | os.PathLike, space: FeatureSpace) -> RealStats:
    """The cached stats at `out_path` when they match the shard and `space`, else compute and write them."""
    out_path = Path(out_path)
    if out_path.is_file():
        try:
            cached = load_real_stats(out_path)
        except LabelwiseError as exc:
            log.warning("%s; recomputing", exc)
        else:
            why = _stale(cached, shard_path, space)
            if why is None:
                return cached
            log.info("%s: recomputing, %s", out_path, why)
    return write_real_stats(shard_path, out_path, space)
