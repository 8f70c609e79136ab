"""The image-folder data stage as it was before per-label jobs (main before issue 15), kept as the
reference that the per-label, streamed, threaded one is checked against (tests/test_prepare_jobs.py:
the same pixels and checksums) and timed against (benchmarks/cases/prepare.py: images/s per core).

One process reads every selected class folder in turn, keeps every decoded image of every label in
memory (a list per label, then `np.stack`), and only then writes the shards.  Decoding: PIL open,
EXIF orientation, RGB, bicubic resize of the shorter side, centre crop; no draft, one thread.
Writing uses the project's `write_images`, so a comparison measures reading and holding, not HDF5.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from labelwise.data.pixels import to_rgb8
from labelwise.data.sources import square_image  # unchanged by issue 15: one copy
from labelwise.images import write_images

IMAGE_ERRORS = (OSError, ValueError, SyntaxError, Image.DecompressionBombError)


def read_image(path: Path, resolution: int) -> np.ndarray:
    with Image.open(path) as image:
        # The pixel rule of issue 16 (16-bit scaled, transparency onto black), which the pipeline applies too.
        rgb, _ = to_rgb8(ImageOps.exif_transpose(image))
    return np.asarray(square_image(rgb, resolution), dtype=np.uint8).transpose(2, 0, 1)


def load_imagefolder(root, labels: list[int], resolution: int) -> tuple[list[str], dict[int, np.ndarray], list[str]]:
    """(class names, label -> uint8 N×3×R×R, skipped files relative to root), every label in memory."""
    root = Path(root)
    names = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    per_label, skipped = {}, []
    for label in labels:
        images = []
        for path in sorted((root / names[label]).iterdir()):
            if path.name.startswith(".") or not path.is_file():
                continue
            try:
                images.append(read_image(path, resolution))
            except IMAGE_ERRORS:
                skipped.append(path.relative_to(root).as_posix())
        per_label[label] = np.stack(images)
    return names, per_label, skipped


def prepare(root, out_dir, labels: list[int], resolution: int) -> dict[int, str]:
    """The old single job: read everything, then write out_dir/shards/<label>.h5; label -> sha256."""
    names, per_label, _ = load_imagefolder(root, labels, resolution)
    sums = {}
    for label, images in per_label.items():
        write_images(
            Path(out_dir) / "shards" / f"{label}.h5",
            images,
            label=label,
            class_name=names[label],
            source="imagefolder",
            resolution=resolution,
            channels=3,
        )
        sums[label] = hashlib.sha256(images.tobytes()).hexdigest()
    return sums
