"""Metric maths on feature arrays: Fréchet distance, Inception Score, KID, precision and recall — all
torch-fidelity's.

Both feature spaces (Inception and the label classifier) go through these functions, so every FID,
IS, KID, precision and recall that labelwise reports is computed by the same code as torch-fidelity's
own `calculate_metrics`.  This module only adapts array types, caps parameters that small per-label
sample counts would otherwise break (IS splits, KID subset size) and reports what was used.
"""

from __future__ import annotations

import numpy as np
import torch

from ..errors import LabelwiseError

try:
    from torch_fidelity.metric_fid import (
        KEY_METRIC_FID,
        fid_features_to_statistics,
        fid_statistics_to_metric,
    )
    from torch_fidelity.metric_isc import KEY_METRIC_ISC_MEAN, KEY_METRIC_ISC_STD, isc_features_to_metric
    from torch_fidelity.metric_kid import KEY_METRIC_KID_MEAN, KEY_METRIC_KID_STD, kid_features_to_metric
    from torch_fidelity.metric_prc import KEY_METRIC_PRECISION, KEY_METRIC_RECALL, prc_features_to_metric
except ImportError as exc:  # pragma: no cover - depends on the install
    raise LabelwiseError(
        f"the metrics need torch-fidelity, which cannot be imported ({exc}); "
        "install it with: pip install 'labelwise[metrics]'"
    ) from None

# torch-fidelity's defaults, named here so metrics.json can record them.
IS_SPLITS = 10
KID_SUBSETS = 100
KID_SUBSET_SIZE = 1000
RNG_SEED = 2020
PRC_K = 3  # prc_neighborhood: Kynkäänniemi et al.'s k
PRC_BATCH = 2000  # rows of each distance block (a block is PRC_BATCH × n floats)


def _tensor(features) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(features))
    if t.dim() != 2:
        raise ValueError(f"features must be a 2-D (N, D) array, got shape {tuple(t.shape)}")
    return t


def gaussian_stats(features) -> dict[str, np.ndarray]:
    """Mean and covariance of (N, D) features, in float64 (so that any two sets compare)."""
    stats = fid_features_to_statistics(_tensor(features).double())
    return {"mu": np.asarray(stats["mu"], np.float64), "sigma": np.atleast_2d(np.asarray(stats["sigma"], np.float64))}


def frechet_distance(stats_1: dict, stats_2: dict) -> float:
    """Fréchet distance between two Gaussians given as {'mu', 'sigma'} (the FID formula)."""
    a = {k: np.asarray(stats_1[k], np.float64) for k in ("mu", "sigma")}
    b = {k: np.asarray(stats_2[k], np.float64) for k in ("mu", "sigma")}
    return float(fid_statistics_to_metric(a, b, verbose=False)[KEY_METRIC_FID])


def frechet_distance_features(features_1, features_2) -> float:
    return frechet_distance(gaussian_stats(features_1), gaussian_stats(features_2))


def inception_score(logits, splits: int = IS_SPLITS, seed: int = RNG_SEED) -> dict:
    """IS of (N, K) logits (softmax is applied inside), mean ± std over `splits` shuffled chunks.

    With fewer samples than splits an empty chunk would give NaN, so the split count is capped at
    N; the count actually used is returned with the score.
    """
    t = _tensor(logits)
    n = t.shape[0]
    if n < 1:
        raise ValueError("inception_score needs at least one sample")
    used = max(1, min(int(splits), n))
    out = isc_features_to_metric(t, splits=used, shuffle=True, rng_seed=seed)
    return {"mean": out[KEY_METRIC_ISC_MEAN], "std": out[KEY_METRIC_ISC_STD], "splits": used, "n": n}


def kernel_distance(
    features_1, features_2, subset_size: int = KID_SUBSET_SIZE, subsets: int = KID_SUBSETS, seed: int = RNG_SEED
) -> dict:
    """KID (unbiased MMD² with torch-fidelity's cubic polynomial kernel) over random subsets.

    torch-fidelity draws `subsets` subsets of `subset_size` samples from each set without
    replacement and refuses a subset larger than either set; with a few hundred samples per label
    the subset size is therefore capped at min(subset_size, n_1, n_2).  The estimate stays unbiased
    at any subset size (unlike FID); smaller subsets only make it noisier, which the std shows.
    """
    f1, f2 = _tensor(features_1).float(), _tensor(features_2).float()
    size = min(int(subset_size), f1.shape[0], f2.shape[0])
    if size < 2:
        raise ValueError(f"KID needs at least 2 samples in each set, got {f1.shape[0]} and {f2.shape[0]}")
    out = kid_features_to_metric(f1, f2, kid_subsets=int(subsets), kid_subset_size=size, rng_seed=seed, verbose=False)
    return {
        "mean": out[KEY_METRIC_KID_MEAN],
        "std": out[KEY_METRIC_KID_STD],
        "subset_size": size,
        "subsets": int(subsets),
    }


def precision_recall(real_features, generated_features, k: int = PRC_K, seed: int = RNG_SEED) -> dict:
    """Improved precision and recall (Kynkäänniemi et al. 2019) of generated against real (N, D) features.

    Each sample spans a ball to its k-th nearest neighbour in its own set: precision is the share of
    generated samples inside some real ball (do they look real?), recall the share of real samples
    inside some generated ball (is the real variety covered? a collapsed generator has low recall).
    The ball radii shrink as a set grows, so, as in the paper, both sets have the same size n: the
    larger one is cut to a random subset (drawn with `seed`) of the smaller one's size.  The maths is
    torch-fidelity's `prc_features_to_metric` (in its row-batched form, whose memory stays bounded
    for large sets).  Needs n > k; otherwise precision and recall are None (recorded as null).
    """
    real, fake = _tensor(real_features).float(), _tensor(generated_features).float()
    n = min(real.shape[0], fake.shape[0])
    if n > int(k):
        rng = np.random.default_rng(seed)
        real, fake = (
            x if x.shape[0] == n else x[np.sort(rng.choice(x.shape[0], n, replace=False))] for x in (real, fake)
        )
        out = prc_features_to_metric(
            fake, real, prc_neighborhood=int(k), prc_batch_size=PRC_BATCH, save_cpu_ram=True, verbose=False
        )
        precision, recall = float(out[KEY_METRIC_PRECISION]), float(out[KEY_METRIC_RECALL])
    else:
        precision = recall = None
    return {"precision": precision, "recall": recall, "k": int(k), "n": int(n)}
