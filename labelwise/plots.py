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
    fig_w = 1.6 + w / 40
    fig, axes = plt.subplots(len(rows), 1, figsize=(fig_w, 0.25 + len(rows) * h / 40), squeeze=False)
    for ax, (name, label, img) in zip(axes[:, 0], rows):
        ax.imshow(img.squeeze(-1) if img.shape[-1] == 1 else img, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        for spine in ax.spines.values():
            spine.set_visible(False)
        ax.set_ylabel(f"{name}" if name == str(label) else f"{label}: {name}", rotation=0, ha="right", va="center", fontsize=9)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.subplots_adjust(hspace=0.08)
    fig.set_dpi(dpi)
    save_figure(fig, outputs)
