"""HDF5 image arrays: the one on-disk format for per-label shards and generated samples.

A file holds a uint8 `images` dataset of shape (N, C, H, W), chunked per image and gzip
compressed, and attributes describing it (label, class name, source, resolution, count) plus a
SHA-256 of the image bytes, recorded on write and verified on read, so a truncated or silently
corrupted file is reported instead of being trained on.
"""
from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

import h5py
import numpy as np

from .errors import LabelwiseError
from .io import write_bytes

DATASET = "images"


def images_sha256(images: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(images).tobytes()).hexdigest()


def write_images(path: str | os.PathLike, images: np.ndarray, **attrs) -> None:
    """Write `images` (uint8, N×C×H×W) and `attrs` atomically to an HDF5 file at `path`."""
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4:
        raise ValueError(f"images must be uint8 N×C×H×W, got {images.dtype} {images.shape}")
    n, c, h, w = images.shape
    # Built in memory, written with Python file writes: see labelwise.io on a full disk under h5py.
    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as f:
        f.create_dataset(
            DATASET,
            data=images,
            chunks=(1, c, h, w) if n else None,
            compression="gzip" if n else None,
            compression_opts=4 if n else None,
            shuffle=bool(n),
        )
        for key, value in attrs.items():
            if value is not None:
                f.attrs[key] = value
        f.attrs["count"] = n
        f.attrs["sha256"] = images_sha256(images)
    write_bytes(path, buffer.getbuffer())


def read_images(
    path: str | os.PathLike, expect: dict | None = None, verify: bool = True
) -> tuple[np.ndarray, dict]:
    """Read an image file written by `write_images`; check its checksum and the `expect`ed attributes.

    Raises LabelwiseError naming the file and the fix when it is missing, unreadable, corrupt, or
    disagrees with `expect` (e.g. a shard whose label is not the one meta.json lists).
    """
    path = Path(path)
    fix = "delete it and rerun the stage that writes it (snakemake reruns it when it is missing)"
    if not path.exists():
        raise LabelwiseError(f"{path}: file not found; rerun the stage that writes it")
    try:
        with h5py.File(path, "r") as f:
            if DATASET not in f:
                raise LabelwiseError(f"{path}: no '{DATASET}' dataset in the file; {fix}")
            images = f[DATASET][()]
            attrs = {k: _plain(v) for k, v in f.attrs.items()}
    except LabelwiseError:
        raise
    except (OSError, KeyError, ValueError, RuntimeError) as exc:
        raise LabelwiseError(f"{path}: unreadable or corrupt HDF5 file ({exc}); {fix}") from None
    if images.dtype != np.uint8 or images.ndim != 4:
        raise LabelwiseError(f"{path}: images are {images.dtype} {images.shape}, expected uint8 N×C×H×W; {fix}")
    if attrs.get("count") != len(images):
        raise LabelwiseError(f"{path}: holds {len(images)} images but records count={attrs.get('count')}; {fix}")
    if verify and attrs.get("sha256") != images_sha256(images):
        raise LabelwiseError(f"{path}: checksum mismatch (the images were altered or damaged); {fix}")
    for key, want in (expect or {}).items():
        if attrs.get(key) != want:
            raise LabelwiseError(
                f"{path}: attribute {key}={attrs.get(key)!r} but {want!r} was expected; "
                f"the file does not belong to this dataset/config: {fix}"
            )
    return images, attrs


def _plain(value):
    """HDF5 attributes come back as numpy scalars/bytes; make them plain Python values."""
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value
