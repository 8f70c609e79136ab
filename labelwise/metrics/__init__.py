"""Evaluation of generated samples: label classifier, Inception (via torch-fidelity) and their FID, IS,
KID, precision and recall.

Submodules: `stats` (the metric maths, torch-fidelity's), `inception` and `inception_weights` (the
Inception feature space; finding its weights offline, torch-free), `classifier` (a small CNN trained
on the real shards: label accuracy and a feature space), `realstats` (cached real statistics),
`evaluate` (one model's metrics.json and per-label CSV), `snapshots` (FID along training).
Inception weights are optional (evaluation.inception: auto skips those metrics without them).
Importing the package is cheap: the names below load from their submodules on first use (PEP 562),
so the Snakefile's parse-time weights lookup pulls in no torch, torchvision or torch-fidelity.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

# Public name -> the submodule defining it.
_EXPORTS = {
    "ClassifierSpace": "classifier",
    "train_classifier": "classifier",
    "DEFAULT_SETTINGS": "evaluate",
    "evaluate_model": "evaluate",
    "open_spaces": "evaluate",
    "write_metrics": "evaluate",
    "write_per_label_csv": "evaluate",
    "RealStats": "realstats",
    "load_real_stats": "realstats",
    "real_stats": "realstats",
    "stats_path": "realstats",
    "write_real_stats": "realstats",
    "frechet_distance": "stats",
    "gaussian_stats": "stats",
    "inception_score": "stats",
    "kernel_distance": "stats",
}
__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:  # for type checkers and IDEs; at run time `__getattr__` imports on demand
    from .classifier import ClassifierSpace, train_classifier  # noqa: F401 (re-exported: __all__)
    from .evaluate import DEFAULT_SETTINGS, evaluate_model, open_spaces, write_metrics, write_per_label_csv  # noqa: F401 (re-exported: __all__)
    from .realstats import RealStats, load_real_stats, real_stats, stats_path, write_real_stats  # noqa: F401 (re-exported: __all__)
    from .stats import frechet_distance, gaussian_stats, inception_score, kernel_distance  # noqa: F401 (re-exported: __all__)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        # AttributeError (not ImportError) so that `from labelwise.metrics import inception` still
        # falls back to importing the submodule.
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # next time: a plain module attribute
    return value


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))
