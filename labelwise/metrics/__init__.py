"""Evaluation of generated samples: label classifier, Inception (via torch-fidelity) and their FID/IS/KID.

- `stats`: the metric maths (torch-fidelity's Fréchet distance, Inception Score, KID) on features.
- `inception`: finding and checking Inception weights offline; torch-fidelity's InceptionV3 as a feature space.
- `classifier`: a small CNN trained on the real shards; label accuracy and its own feature space.
- `realstats`: per-label real-image features, mean and covariance, cached in .npz files.
- `evaluate`: one model's metrics.json and per-label CSV.

All metric maths is torch-fidelity's, so this package needs it (the `metrics` extra); Inception
weights are optional (evaluation.inception: auto skips those metrics when they are absent).
"""
from .classifier import ClassifierSpace, train_classifier
from .evaluate import DEFAULT_SETTINGS, evaluate_model, open_spaces, write_metrics, write_per_label_csv
from .realstats import RealStats, load_real_stats, real_stats, stats_path, write_real_stats
from .stats import frechet_distance, gaussian_stats, inception_score, kernel_distance

__all__ = [
    "ClassifierSpace", "DEFAULT_SETTINGS", "RealStats", "evaluate_model", "frechet_distance", "gaussian_stats",
    "inception_score", "kernel_distance", "load_real_stats", "open_spaces", "real_stats", "stats_path",
    "train_classifier", "write_metrics", "write_per_label_csv", "write_real_stats",
]
