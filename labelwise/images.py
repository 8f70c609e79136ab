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
    # The array's own buffer: hashing must not copy a whole label's pixels (tobytes would).
    return hashlib.sha256(np.ascontiguousarray(images).data).hexdigest()


def write_images(path: str | os.PathLike, images: np.ndarray, **attrs) -> None:
    """Write `images` (uint8, N×C×H×W) and `attrs` atomically to an HDF5 file at `path`."""
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4:
        raise ValueError(f"images must be uint8 N×C×H×W, got {images.dtype} {images.shape}")
    n, c, h, w = images.shape
    # Built in memory, written with Python file writes: see labelwise.io on a full disk under h5py.
    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as f:
        f.create_dataset(DATASET, data=images, **_layout(n, c, h, w))
        for key, value in attrs.items():
            if value is not None:
                f.attrs[key] = value
        f.attrs["count"] = n
        f.attrs["sha256"] = images_sha256(images)
    write_bytes(path, buffer.getbuffer())


def _layout(n: int, c: int, h: int, w: int) -> dict:
    """How image datasets are stored: one gzip-compressed, byte-shuffled chunk per image."""
    if not n:
        return {}
    return {"chunks": (1, c, h, w), "compression": "gzip", "compression_opts": 4, "shuffle": True}


class ImageStream:
    """`write_images` for images that arrive in pieces: append uint8 k×C×H×W arrays as they are made,
    then `close()` writes the file atomically, with `count` and the same `sha256` as `write_images`
    of all the pieces concatenated.  Only the compressed file is held in memory, never the pixels.
    A stream left unclosed (an error while appending) writes nothing."""

    def __init__(self, path: str | os.PathLike, shape: tuple[int, int, int], **attrs):
        self.path, self.attrs, self.count = path, attrs, 0
        self._sha = hashlib.sha256()
        # In memory, as write_images; close() hands the bytes to write_bytes (atomic, one-line errors).
        buffer = io.BytesIO()
        self._file = h5py.File(buffer, "w")
        self._buffer = buffer
        self._data = self._file.create_dataset(
            DATASET, shape=(0, *shape), maxshape=(None, *shape), dtype=np.uint8, **_layout(1, *shape)
        )

    def append(self, images: np.ndarray) -> None:
        images = np.ascontiguousarray(images)
        if images.dtype != np.uint8 or images.shape[1:] != self._data.shape[1:]:
            raise ValueError(
                f"images must be uint8 k×{'×'.join(map(str, self._data.shape[1:]))}, got {images.dtype} {images.shape}"
            )
        n = len(images)
        self._data.resize(self.count + n, axis=0)
        self._data[self.count :] = images
        self._sha.update(images.data)
        self.count += n

    def close(self) -> str:
        """Write the file; returns the images' sha256."""
        for key, value in self.attrs.items():
            if value is not None:
                self._file.attrs[key] = value
        self._file.attrs["count"] = self.count
        self._file.attrs["sha256"] = digest = self._sha.hexdigest()
        self._file.close()
        write_bytes(self.path, self._buffer.getbuffer())
        self._buffer = None
        return digest


def read_attrs(path: str | os.PathLike) -> dict:
    """The attributes of an image file written by `write_images` (no pixel is read or verified)."""
    path = Path(path)
    if not path.exists():
        raise LabelwiseError(f"{path}: file not found; rerun the stage that writes it")
    try:
        with h5py.File(path, "r") as f:
            return {k: _plain(v) for k, v in f.attrs.items()}
    except (OSError, KeyError, ValueError, RuntimeError) as exc:
        raise LabelwiseError(
            f"{path}: unreadable or corrupt HDF5 file ({exc}); delete it and rerun the stage that writes it"
        ) from None


def read_images(path: str | os.PathLike, expect: dict | None = None, verify: bool = True) -> tuple[np.ndarray, dict]:
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
