"""Images on demand from trained generators (`labelwise generate`): N images per label as PNG files,
and optionally one grid image, in a folder of the user's choice.

The same seed gives the same images (each label's noise comes from `labelwise.sample.draw`, the
stream the pipeline's own samples use), on the same device and batch size.  The generator files
are only read: nothing of the pipeline's results is written or rerun.
"""

from __future__ import annotations

import io
import logging
from pathlib import Path

import numpy as np
from PIL import Image

from .device import select_device
from .errors import LabelwiseError
from .io import write_bytes
from .memory import require
from .sample import draw
from .train import load_generator

log = logging.getLogger("labelwise.generate")


def png_bytes(image: np.ndarray) -> bytes:
    """uint8 C×H×W (1 or 3 channels) -> PNG bytes (no timestamp or other varying metadata)."""
    array = image[0] if image.shape[0] == 1 else image.transpose(1, 2, 0)
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(array)).save(buffer, format="PNG")
    return buffer.getvalue()


def tile(rows: list[np.ndarray], gap: int = 2) -> np.ndarray:
    """Rows of uint8 N×C×H×W images -> one uint8 C×H×W image, white gaps between the cells."""
    c, h, w = rows[0].shape[1:]
    columns = max(len(r) for r in rows)
    grid = np.full((c, len(rows) * (h + gap) - gap, columns * (w + gap) - gap), 255, dtype=np.uint8)
    for i, row in enumerate(rows):
        for j, image in enumerate(row):
            grid[:, i * (h + gap) : i * (h + gap) + h, j * (w + gap) : j * (w + gap) + w] = image
    return grid


def generate_images(
    sources: list[tuple[Path, int]],
    model: str,
    n: int,
    seed: int,
    outdir,
    *,
    device: str = "auto",
    grid: bool = False,
    batch_size: int = 256,
) -> list[Path]:
    """`n` images of each (generator file, label) in `sources` as `<outdir>/<model>_label<k>_<i>.png`,
    plus `<outdir>/<model>_grid.png` (one row per label) with `grid`; returns the paths written."""
    dev = select_device(device)
    outdir = Path(outdir)
    written, rows = [], []
    for generator_path, label in sources:
        gen, info = load_generator(generator_path, dev, label=label)
        images = draw(gen, info, n, seed, dev, batch_size)
        for i, image in enumerate(images):
            path = outdir / f"{model}_label{label}_{i:04d}.png"
            write_bytes(path, png_bytes(image))
            written.append(path)
        if grid:  # kept for the grid only
            if rows and images.shape[1:] != rows[0].shape[1:]:
                raise LabelwiseError(
                    f"{generator_path}: images of {images.shape[1:]}, the earlier labels' are {rows[0].shape[1:]}; "
                    "a grid needs one image size: generate the labels without --grid or one dataset's at a time"
                )
            rows.append(images)
        log.info("[%s label %d] %d images from %s -> %s", model, label, n, generator_path, outdir)
    if grid and rows:
        c, h, w = rows[0].shape[1:]
        # the grid and its PNG encoding, while the rows are still held
        grid_bytes = 2 * c * len(rows) * (h + 2) * n * (w + 2)
        require(grid_bytes, f"a grid of {len(rows)}×{n} images", "lower -n or drop --grid")
        path = outdir / f"{model}_grid.png"
        write_bytes(path, png_bytes(tile(rows)))
        written.append(path)
    return written
