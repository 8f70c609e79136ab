"""Figures for people: sample grids (and, later, metric and training-curve plots), as PNG and PDF."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from .images import read_images  # noqa: E402
from .io import atomic_path  # noqa: E402

MODEL_TITLES = {"wcgan": "W-CGAN (per-label WGAN-GP)", "dccgan": "DC-CGAN (per-label DCGAN)", "cgan": "single CGAN"}


def save_figure(fig, outputs) -> None:
    """Save one figure to each path in `outputs` (format from the suffix), atomically."""
    for path in outputs:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, bbox_inches="tight", format=Path(path).suffix.lstrip("."))
    plt.close(fig)


def _row_image(images: np.ndarray, columns: int, gap: int = 2) -> np.ndarray:
    """Tile up to `columns` images side by side (HWC, floats in [0, 1]), with a white gap between them."""
    images = images[:columns]
    c, h, w = images.shape[1:]
    row = np.ones((h, columns * (w + gap) - gap, c), dtype=np.float32)
    for i, img in enumerate(images):
        row[:, i * (w + gap) : i * (w + gap) + w] = img.transpose(1, 2, 0) / 255.0
    return row


def sample_grid(sample_paths, outputs, *, columns: int = 10, title: str | None = None, dpi: int = 150) -> None:
    """One row per label (its class name on the left), `columns` samples per row."""
    rows = []
    for path in sample_paths:
        images, attrs = read_images(path)
        rows.append((attrs.get("class_name") or str(attrs["label"]), attrs["label"], _row_image(images, columns)))
    h, w = rows[0][2].shape[:2]
    fig_w, fig_h = 1.6 + w / 40, 0.45 + len(rows) * h / 40
    fig, axes = plt.subplots(len(rows), 1, figsize=(fig_w, fig_h), squeeze=False)
    for ax, (name, label, img) in zip(axes[:, 0], rows):
        ax.imshow(img.squeeze(-1) if img.shape[-1] == 1 else img, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        for spine in ax.spines.values():
            spine.set_visible(False)
        ax.set_ylabel(f"{name}" if name == str(label) else f"{label}: {name}", rotation=0, ha="right", va="center", fontsize=9)
    if title:
        fig.suptitle(title, fontsize=10, y=1 - 0.12 / fig_h, va="top")
    fig.subplots_adjust(hspace=0.08, top=1 - 0.4 / fig_h, bottom=0.02)
    fig.set_dpi(dpi)
    save_figure(fig, outputs)


def read_train_log(path) -> dict[str, np.ndarray]:
    """A training log CSV as columns of floats (empty cells -> NaN)."""
    lines = Path(path).read_text().splitlines()
    header = lines[0].split(",")
    rows = [[float(v) if v else np.nan for v in line.split(",")] for line in lines[1:] if line]
    data = np.array(rows, dtype=float).reshape(len(rows), len(header))
    return {name: data[:, i] for i, name in enumerate(header)}


CURVES = (
    ("d_loss", "critic / discriminator loss"),
    ("g_loss", "generator loss"),
    ("wasserstein_estimate", "Wasserstein estimate\nE[D(real)] − E[D(fake)]"),
)


def training_curves(log_paths, outputs, *, title: str | None = None, dpi: int = 150) -> None:
    """Losses and the Wasserstein estimate against iterations (top) and wall time (bottom):
    the mean over labels as a line, mean ± one standard deviation as a band."""
    logs = [read_train_log(p) for p in log_paths]
    n = min(len(log["iteration"]) for log in logs)  # labels stopped by a minutes budget may be shorter
    iterations = logs[0]["iteration"][:n]
    wall = np.mean([log["wall_seconds"][:n] for log in logs], axis=0)
    curves = [(key, label) for key, label in CURVES if not np.all(np.isnan(logs[0][key][:n]))]
    fig, axes = plt.subplots(2, len(curves), figsize=(4.2 * len(curves), 6.2), squeeze=False)
    for col, (key, label) in enumerate(curves):
        values = np.array([log[key][:n] for log in logs])
        mean, std = np.nanmean(values, axis=0), np.nanstd(values, axis=0)
        for row, (x, xlabel) in enumerate(((iterations, "generator iteration"), (wall, "training wall time (s, mean over labels)"))):
            ax = axes[row, col]
            ax.plot(x, mean, color="C0", lw=1.5, label=f"mean over {len(logs)} labels")
            ax.fill_between(x, mean - std, mean + std, color="C0", alpha=0.25, lw=0, label="± 1 std over labels")
            ax.set_xlabel(xlabel)
            ax.set_ylabel(label)
            ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=8, loc="best")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.set_dpi(dpi)
    save_figure(fig, outputs)


# (metrics.json section, metric key, axis label, lower is better)
COMPARED = (
    ("classifier", "label_accuracy", "label accuracy\n(classifier, share of own label)", False),
    ("classifier", "fid", "FID in classifier features", True),
    ("inception", "fid", "FID (Inception)", True),
    ("inception", "is", "Inception score", False),
)


def _pooled_and_per_label(section: dict, key: str):
    value = section.get(key) or {}
    if key == "is":
        return value.get("mean"), []
    per_label = [v for v in (value.get("per_label") or {}).values() if v is not None]
    return value.get("pooled"), per_label


def metrics_comparison(metrics_paths, outputs, *, title: str | None = None, dpi: int = 150) -> None:
    """Bars: each model's pooled value; dots: its per-label values. Skipped metrics are said so."""
    import json

    runs = [json.loads(Path(p).read_text()) for p in metrics_paths]
    panels = [(sec, key, label, lower) for sec, key, label, lower in COMPARED
              if any(r.get(sec, {}).get("status") == "ok" for r in runs)]
    fig, axes = plt.subplots(1, len(panels), figsize=(3.4 * len(panels), 3.8), squeeze=False)
    names = [MODEL_TITLES.get(r["model"], r["model"]).split(" (")[0] for r in runs]
    rng = np.random.default_rng(0)
    for ax, (sec, key, label, lower) in zip(axes[0], panels):
        for i, run in enumerate(runs):
            pooled, per_label = _pooled_and_per_label(run.get(sec, {}), key)
            if pooled is not None:
                ax.bar(i, pooled, color=f"C{i}", alpha=0.6, width=0.6)
                ax.annotate(f"{pooled:.3g}", (i, pooled), ha="center", va="bottom", fontsize=8)
            if per_label:
                ax.scatter(i + rng.uniform(-0.15, 0.15, len(per_label)), per_label, s=10, color="k", zorder=3,
                           label="per label" if i == 0 else None)
        ax.set_xticks(range(len(runs)), names)
        ax.set_ylabel(label)
        ax.set_title("lower is better" if lower else "higher is better", fontsize=8, color="0.4")
        ax.grid(axis="y", alpha=0.3)
    if any(ax.get_legend_handles_labels()[0] for ax in axes[0]):
        axes[0, 0].legend(fontsize=8, loc="best")
    notes = {r.get("inception", {}).get("reason") for r in runs if r.get("inception", {}).get("status") == "skipped"}
    if notes:
        first = sorted({n.split(";")[0] for n in notes if n})  # the cause; metrics.json has the full fix
        fig.text(0.01, -0.02, "Inception metrics skipped: " + "; ".join(first),
                 fontsize=7, color="0.3", ha="left", va="top", wrap=True)
    n_gen = {sum((r["protocol"].get("n_generated") or {}).values()) for r in runs}
    fig.suptitle((title or "") + f"  (n generated per model: {', '.join(map(str, sorted(n_gen)))})", fontsize=10)
    fig.tight_layout()
    fig.set_dpi(dpi)
    save_figure(fig, outputs)
