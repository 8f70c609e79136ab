"""HDF5 image arrays: the one on-disk format for per-label shards and generated samples.

A file holds a uint8 `images` dataset of shape (N, C, H, W), chunked per image and gzip
compressed, and attributes describing it (label, class name, source, resolution, count) plus a
SHA-256 of the image bytes, recorded on write and verified on read, so a truncated or silently
corrupted file is reported instead of being trained on.  Every file is read through `open_images`,
which opens only images stored in the file itself and checks what the file declares before a pixel
is read: a shard or samples file may come from another user or site (docs/faults.md).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import h5py
import numpy as np
from h5py import h5d, h5z

from .errors import LabelwiseError
from .io import write_bytes
from .memory import human_bytes, require

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


# ----------------------------------------------------------------------------- the trusted reader
# A file read here may come from another user or another site (a shared file system): it is opened only
# when its `images` dataset is stored inside the file itself, in the layout and with the filters
# labelwise writes, and only once what it declares is consistent with what the file can hold.
# Nothing is read from another file (external storage, external or soft links, virtual datasets), no
# HDF5 filter plugin is loaded, and no more memory is used than the file's own contents justify.

# HDF5 filters labelwise reads: what write_images uses (gzip + shuffle) and the checksum filter.
_FILTERS = {h5z.FILTER_DEFLATE: "gzip", h5z.FILTER_SHUFFLE: "shuffle", h5z.FILTER_FLETCHER32: "fletcher32"}
_LAYOUTS = {h5d.CONTIGUOUS: "contiguous", h5d.CHUNKED: "chunked", h5d.COMPACT: "compact"}
# Deflate expands a stream at most 1032-fold (RFC 1951's longest match per code): the most image
# bytes a file of a given size can hold.  A chunk is read whole, so its size is bounded too.
MAX_INFLATION = 1032
MAX_CHUNK_BYTES = 64 << 20
# Images per streamed read: about this many bytes at a time are read and hashed.
READ_BLOCK_BYTES = 16 << 20
# The largest image side any stage makes or reads: the networks' largest resolution.
MAX_SIDE = 128
_FIX = "delete it and rerun the stage that writes it (snakemake reruns it when it is missing)"
_H5_ERRORS = (OSError, KeyError, ValueError, RuntimeError, TypeError, AttributeError, RecursionError)


class ImageFile:
    """An image file opened for reading by the rules above (use `open_images`): `shape` and `attrs`
    come from the file's metadata, `read()` streams the pixels and checks the checksum."""

    def __init__(self, path: Path, handle: h5py.File, data: h5py.Dataset, attrs: dict):
        self.path, self._handle, self._data, self.attrs = path, handle, data, attrs
        self.shape: tuple[int, int, int, int] = tuple(int(d) for d in data.shape)

    def refuse(self, what: str, fix: str = _FIX) -> LabelwiseError:
        return LabelwiseError(f"{self.path}: {what}; {fix}")

    def read(self, verify: bool = True) -> np.ndarray:
        """Every image, uint8 N×C×H×W; with `verify`, the checksum is computed while reading and compared."""
        n, c, h, w = self.shape
        require(n * c * h * w, f"{self.path}: its {n} images", "free memory or run this stage on a node with more")
        images = np.empty(self.shape, np.uint8)
        digest = hashlib.sha256()
        step = max(1, READ_BLOCK_BYTES // max(1, c * h * w))
        try:
            for start in range(0, n, step):
                block = np.s_[start : min(n, start + step)]
                self._data.read_direct(images, source_sel=block, dest_sel=block)
                if verify:
                    digest.update(images[block].data)
        except _H5_ERRORS as exc:
            raise self.refuse(f"unreadable or corrupt HDF5 file ({_one_line(exc)})") from None
        if verify and self.attrs.get("sha256") != digest.hexdigest():
            raise self.refuse("checksum mismatch (the images were altered or damaged)")
        return images


@contextlib.contextmanager
def open_images(path: str | os.PathLike) -> Iterator[ImageFile]:
    """An image file written by `write_images` (or anything shaped like one), checked before any pixel
    is read: a regular file; `images` a dataset linked in the file itself (no soft or external link),
    stored in it (contiguous, chunked or compact; no external storage, no virtual dataset), with only
    the gzip, shuffle and fletcher32 filters; uint8 of rank 4 with 1 or 3 channels and sides of at
    most MAX_SIDE; its `count` attribute equal to its length; and no more image bytes declared than
    the file's stored data can expand to (MAX_INFLATION) or than the file holds.  Each refusal is one
    LabelwiseError naming the file and what is wrong."""
    path = Path(path)
    try:
        st = path.stat()
    except FileNotFoundError:
        raise LabelwiseError(f"{path}: file not found; rerun the stage that writes it") from None
    except OSError as exc:
        raise LabelwiseError(f"{path}: cannot read it ({exc.strerror or exc}); {_FIX}") from None
    if not stat.S_ISREG(st.st_mode):
        raise LabelwiseError(f"{path}: not a regular file (a folder, device or pipe); {_FIX}")
    try:
        handle = h5py.File(path, "r")
    except _H5_ERRORS as exc:
        raise LabelwiseError(f"{path}: unreadable or corrupt HDF5 file ({_one_line(exc)}); {_FIX}") from None
    with handle:
        try:
            checked = _checked(path, handle, st.st_size)
        except LabelwiseError:
            raise
        except _H5_ERRORS as exc:
            raise LabelwiseError(f"{path}: unreadable or corrupt HDF5 file ({_one_line(exc)}); {_FIX}") from None
        yield checked


def _checked(path: Path, handle: h5py.File, file_size: int) -> ImageFile:
    def refuse(what: str) -> LabelwiseError:
        return LabelwiseError(f"{path}: {what}; {_FIX}")

    link = handle.get(DATASET, getlink=True)  # the link itself: nothing is followed yet
    if link is None:
        raise refuse(f"no '{DATASET}' dataset in the file")
    if isinstance(link, h5py.SoftLink):
        raise refuse(f"'{DATASET}' is a soft link (to {link.path}), not a dataset stored in the file")
    if isinstance(link, h5py.ExternalLink):
        raise refuse(f"'{DATASET}' is an external link to {link.filename}:{link.path}; refusing to read another file")
    data = handle[DATASET]
    if not isinstance(data, h5py.Dataset):
        raise refuse(f"'{DATASET}' is a {type(data).__name__.lower()}, not a dataset")
    plist = data.id.get_create_plist()
    layout = plist.get_layout()
    if layout == h5d.VIRTUAL:
        raise refuse(f"'{DATASET}' is a virtual dataset (its data lies in other files); refusing to read it")
    if layout not in _LAYOUTS:
        raise refuse(f"'{DATASET}' has an unknown storage layout ({layout})")
    if plist.get_external_count():
        first = plist.get_external(0)[0].decode(errors="backslashreplace")
        raise refuse(
            f"'{DATASET}' uses HDF5 external storage (its data lies in {first}); refusing to read another file"
        )
    filters = [plist.get_filter(i) for i in range(plist.get_nfilters())]
    unknown = [
        f"{name.decode(errors='backslashreplace')} ({code})" for code, _, _, name in filters if code not in _FILTERS
    ]
    if unknown:
        raise refuse(f"'{DATASET}' uses the HDF5 filter(s) {', '.join(unknown)}; labelwise reads gzip and shuffle only")
    if data.shape is None or data.dtype != np.uint8 or len(data.shape) != 4:
        raise refuse(f"images are {data.dtype} of shape {data.shape}, expected uint8 N×C×H×W")
    n, c, h, w = (int(d) for d in data.shape)
    if c not in (1, 3) or not (1 <= h <= MAX_SIDE and 1 <= w <= MAX_SIDE):
        raise refuse(f"images of shape {data.shape}: expected 1 or 3 channels and sides of 1 to {MAX_SIDE} pixels")
    chunk = int(np.prod(data.chunks)) if data.chunks is not None else 0
    if chunk > MAX_CHUNK_BYTES:
        raise refuse(f"'{DATASET}' is stored in chunks of {human_bytes(chunk)}, over {human_bytes(MAX_CHUNK_BYTES)}")
    attrs = {k: _plain(v) for k, v in handle.attrs.items()}
    if attrs.get("count") != n:
        raise refuse(f"holds {n} images but records count={attrs.get('count')!r}")
    nbytes, stored = n * c * h * w, int(data.id.get_storage_size())
    inflation = MAX_INFLATION if any(code == h5z.FILTER_DEFLATE for code, *_ in filters) else 1
    if stored > file_size or nbytes > stored * inflation:
        raise refuse(
            f"declares {n} images of {c}×{h}×{w} ({human_bytes(nbytes)}) but stores {human_bytes(stored)} of image "
            f"data in a file of {human_bytes(file_size)}"
        )
    return ImageFile(path, handle, data, attrs)


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def read_attrs(path: str | os.PathLike) -> dict:
    """The attributes of an image file (no pixel is read or verified), once `open_images` accepts it."""
    with open_images(path) as f:
        return dict(f.attrs)


def read_images(
    path: str | os.PathLike,
    expect: dict | None = None,
    verify: bool = True,
    *,
    shape: tuple[int, int, int] | None = None,
    count: int | None = None,
) -> tuple[np.ndarray, dict]:
    """Read an image file written by `write_images` through `open_images`; check the `expect`ed
    attributes, the image `shape` (C, H, W) and `count` before reading, and the checksum while reading.

    Raises LabelwiseError naming the file and the fix when it is missing, unreadable, corrupt, not
    stored as labelwise stores images, or disagrees with `expect` (e.g. a shard whose label is not
    the one meta.json lists).
    """
    with open_images(path) as f:
        for key, want in (expect or {}).items():
            if f.attrs.get(key) != want:
                raise LabelwiseError(
                    f"{f.path}: attribute {key}={f.attrs.get(key)!r} but {want!r} was expected; "
                    f"the file does not belong to this dataset/config: {_FIX}"
                )
        if shape is not None and f.shape[1:] != tuple(shape):
            raise f.refuse(f"images are {f.shape[1:]}, expected {tuple(shape)}")
        if count is not None and f.shape[0] != count:
            raise f.refuse(f"holds {f.shape[0]} images, expected {count}")
        return f.read(verify), dict(f.attrs)


def _plain(value):
    """HDF5 attributes come back as numpy scalars/bytes; make them plain Python values."""
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value
