"""Per-label shards: write `out_dir/shards/{label}.h5` plus `out_dir/meta.json`, and read them back.

`prepare_dataset` writes one HDF5 shard per selected label, then meta.json: mnist5k and CIFAR from
one read of their raw files, an image folder one class folder at a time (`prepare_label`, which the
pipeline runs as one job per label, then `assemble_meta`, one small job that reads only the shards'
attributes).  meta.json is written last, atomically, and is the stage's completion marker: it
exists only once every shard it lists is complete, and it records each shard's image checksum.
A shard is trusted only through it (`read_shard`, `read_shard_file`): a shard of a dataset whose
meta.json is missing (an interrupted preparation) or does not list it with that checksum (replaced,
corrupted, swapped with another label's, or rewritten by a later run) is refused with one line
saying to rerun the data stage.
"""

from __future__ import annotations

import json
import logging
import operator
import os
import re
from pathlib import Path, PurePosixPath

import numpy as np

from ..errors import LabelwiseError
from ..images import ImageStream, images_sha256, open_images, read_attrs, read_images, write_images
from ..io import write_json
from ..paths import stored_name
from ..progress import Progress
from .sources import (
    MIN_IMAGES_PER_CLASS,
    SOURCES,
    RawData,
    check_source,
    class_files,
    imagefolder_classes,
    iter_class_images,
    load_source,
    num_classes,
    warn_skipped,
)

log = logging.getLogger("labelwise.data")

META_NAME = "meta.json"
SHARD_DIR = "shards"
_SHA256 = re.compile(r"[0-9a-f]{64}")
_RERUN = "delete it and rerun the data stage"


def _is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


# --------------------------------------------------------------------------- writing


def select_labels(labels, n_classes: int, source: str) -> list[int]:
    """Validate config `data.labels` against the dataset; None means every class.  Sorted, unique."""
    if labels is None:
        return list(range(n_classes))
    if isinstance(labels, (str, bytes)) or not hasattr(labels, "__iter__"):
        raise LabelwiseError(f"data.labels: expected a list of class indices, got {labels!r}")
    labels = list(labels)
    if not labels:
        raise LabelwiseError("data.labels: empty list; list the class indices to train or leave it out for all classes")
    for value in labels:
        if not _is_int(value) or not 0 <= value < n_classes:
            raise LabelwiseError(
                f"data.labels: {value!r} is not a valid label; {source} has {n_classes} classes, "
                f"so labels must be integers in [0, {n_classes - 1}]"
            )
    return sorted({int(v) for v in labels})


def _check_resolution(resolution) -> None:
    if not _is_int(resolution) or resolution < 1:
        raise LabelwiseError(f"data.resolution: {resolution!r} must be a positive integer (pixels per side)")


def _write_shard(out: Path, label: int, images: np.ndarray, raw: RawData, source: str, root) -> dict:
    name = raw.class_names[label]
    if len(images) == 0:
        raise LabelwiseError(f"{source}: label {label} ({name}) has no images in {root}; drop it from data.labels")
    shard = f"{SHARD_DIR}/{label}.h5"
    write_images(
        out / shard,
        images,
        label=label,
        class_name=name,
        source=source,
        resolution=raw.resolution,
        channels=raw.channels,
    )
    log.info("wrote %s: %d images of label %d (%s)", out / shard, len(images), label, name)
    return {"label": label, "name": name, "count": int(len(images)), "shard": shard, "sha256": images_sha256(images)}


def prepare_label(
    out_dir: str | os.PathLike,
    root: str | os.PathLike,
    label: int,
    *,
    resolution: int = 64,
    threads: int = 1,
    jpeg_draft: bool = False,
    progress_seconds: float = 10.0,
) -> dict:
    """One image-folder label: stream `root/<class of label>/` into `out_dir/shards/{label}.h5`.

    Reads that class folder only; images are decoded CHUNK at a time on `threads` threads and
    appended to the shard as they come, so memory is one compressed shard plus one chunk.  The
    unreadable files go into the shard's `skipped_files` attribute (JSON, paths relative to root)
    for `assemble_meta`.  Returns the label's meta.json entry.
    """
    _check_resolution(resolution)
    class_names = imagefolder_classes(root)
    label = select_labels([label], len(class_names), "imagefolder")[0]
    root = Path(root)
    folder = root / class_names[label]
    name = stored_name(class_names[label])  # as meta.json and the shard store it (non-UTF-8 bytes as \\xNN)
    files = class_files(folder)
    progress = Progress(f"label {label} ({name})", len(files), "files", log, progress_seconds)
    log.info(
        "reading class %d (%s): %d file(s) in %s, %d thread(s)%s",
        label,
        name,
        len(files),
        folder,
        threads,
        ", JPEG draft decoding" if jpeg_draft else "",
    )
    shard = f"{SHARD_DIR}/{label}.h5"
    stream = ImageStream(
        Path(out_dir) / shard,
        (3, resolution, resolution),
        label=label,
        class_name=name,
        source="imagefolder",
        resolution=resolution,
        channels=3,
    )
    skipped: list[tuple[Path, str]] = []
    composited: list[Path] = []
    for images in iter_class_images(
        files, resolution, skipped, threads=threads, draft=jpeg_draft, progress=progress, composited=composited
    ):
        stream.append(images)
    warn_skipped(skipped)
    if composited:
        log.warning(
            "%s: %d image(s) with transparency; transparent pixels were composited onto black "
            "(labelwise/data/pixels.py)",
            folder,
            len(composited),
        )
    if not stream.count:
        raise LabelwiseError(
            f"{folder}: no readable image for label {label} ({len(skipped)} unreadable file(s)); "
            "add images to it or drop the label from data.labels"
        )
    if stream.count < MIN_IMAGES_PER_CLASS:  # the label classifier holds one image per label out
        raise LabelwiseError(
            f"{folder}: only {stream.count} readable image for label {label}; every selected class needs at "
            f"least {MIN_IMAGES_PER_CLASS} (the metrics' classifier trains on one and holds one out): add "
            "images to it or drop the label from data.labels, then rerun the data stage"
        )
    relative = [path.relative_to(root).as_posix() for path, _ in skipped]
    stream.attrs.update(jpeg_draft=bool(jpeg_draft), skipped_files=json.dumps(relative))
    digest = stream.close()
    progress.finish(
        f", {stream.count} images, {len(skipped)} skipped, {threads} thread(s); wrote {Path(out_dir) / shard}"
    )
    return {"label": label, "name": name, "count": stream.count, "shard": shard, "sha256": digest}


def assemble_meta(
    out_dir: str | os.PathLike,
    root: str | os.PathLike,
    labels: list[int],
    *,
    resolution: int = 64,
    jpeg_draft: bool = False,
    name: str | None = None,
) -> dict:
    """Write an image folder's meta.json from its per-label shards' own attributes (no pixel is read).

    The last step of the data stage: every shard must exist and have been written for this dataset
    (label, class, resolution, decoding); meta.json then lists each one with its checksum.
    """
    out = Path(out_dir)
    _check_resolution(resolution)
    class_names = [stored_name(n) for n in imagefolder_classes(root)]
    selected = select_labels(labels, len(class_names), "imagefolder")
    entries, skipped = [], []
    for label in selected:
        path = out / SHARD_DIR / f"{label}.h5"
        attrs = read_attrs(path)
        expect = {
            "label": label,
            "class_name": class_names[label],
            "source": "imagefolder",
            "resolution": resolution,
            "channels": 3,
            "jpeg_draft": bool(jpeg_draft),
        }
        for key, want in expect.items():
            if attrs.get(key) != want:
                raise LabelwiseError(
                    f"{path}: written with {key}={attrs.get(key)!r}, this dataset needs {want!r}; "
                    f"delete it and rerun the data stage"
                )
        try:
            listed = json.loads(attrs.get("skipped_files", "[]"))
        except (TypeError, ValueError, RecursionError):
            listed = None
        if not isinstance(listed, list) or not all(isinstance(s, str) for s in listed):
            raise LabelwiseError(f"{path}: its skipped_files attribute is not a JSON list of paths; {_RERUN}")
        if not isinstance(attrs.get("sha256"), str) or not _SHA256.fullmatch(attrs["sha256"]):
            raise LabelwiseError(f"{path}: no valid sha256 attribute; {_RERUN}")
        entries.append(
            {
                "label": label,
                "name": class_names[label],
                "count": int(attrs["count"]),
                "shard": f"{SHARD_DIR}/{label}.h5",
                "sha256": attrs["sha256"],
            }
        )
        skipped += listed
    meta = {
        "dataset": name or "imagefolder",
        "source": "imagefolder",
        "root": os.fspath(root),
        "channels": 3,
        "resolution": resolution,
        "jpeg_draft": bool(jpeg_draft),
        "class_names": class_names,
        "labels": entries,
        "skipped_files": skipped,
    }
    _write_meta(out, meta)
    return meta


def _write_meta(out: Path, meta: dict) -> None:
    # Written last, atomically: from here on the shards it lists, with their checksums, are trusted.
    write_json(out / META_NAME, meta)
    log.info(
        "wrote %s (%d images in %d shards)",
        out / META_NAME,
        sum(e["count"] for e in meta["labels"]),
        len(meta["labels"]),
    )


def prepare_dataset(
    source: str,
    out_dir: str | os.PathLike,
    *,
    root: str | os.PathLike | None = None,
    labels: list[int] | None = None,
    resolution: int = 64,
    download: bool = False,
    name: str | None = None,
    threads: int = 1,
    jpeg_draft: bool = False,
    progress_seconds: float = 10.0,
) -> dict:
    """Write `out_dir/shards/{label}.h5` per selected label, then `out_dir/meta.json`.

    mnist5k and CIFAR: their raw files are read once and the shards written one label at a time.
    imagefolder: `prepare_label` for each label in turn, then `assemble_meta` -- what the pipeline
    runs as one job per label and one small job.  `resolution`, `threads` and `jpeg_draft` apply to
    imagefolder only; mnist5k (28) and CIFAR (32) keep their native size.  Returns the meta dict.
    """
    check_source(source)
    if source == "imagefolder":
        _check_resolution(resolution)
    out = Path(out_dir)
    # A meta.json left by an earlier run must not vouch for shards this run is about to replace:
    # remove the completion marker first, so an interrupted run leaves the stage visibly unfinished.
    (out / META_NAME).unlink(missing_ok=True)

    selected = select_labels(labels, num_classes(source, root), source)
    log.info("preparing %s: %d label(s) into %s", source, len(selected), out)
    if source == "imagefolder":
        for label in selected:
            prepare_label(
                out,
                root,
                label,
                resolution=resolution,
                threads=threads,
                jpeg_draft=jpeg_draft,
                progress_seconds=progress_seconds,
            )
        return assemble_meta(out, root, selected, resolution=resolution, jpeg_draft=jpeg_draft, name=name)
    raw = load_source(source, root, selected, download=download)
    entries = [_write_shard(out, label, images, raw, source, root) for label, images in raw.images]
    meta = {
        "dataset": name or source,
        "source": source,
        "root": os.fspath(root) if root is not None else None,
        "channels": raw.channels,
        "resolution": raw.resolution,
        "class_names": list(raw.class_names),
        "labels": entries,
        "skipped_files": list(raw.skipped_files),
    }
    _write_meta(out, meta)
    return meta


# --------------------------------------------------------------------------- reading


def _meta_problem(meta) -> str | None:
    """The first way `meta` departs from what prepare_dataset writes, or None."""
    if not isinstance(meta, dict):
        return "not a JSON object"
    if not isinstance(meta.get("dataset"), str):
        return "'dataset' is not a string"
    if meta.get("source") not in SOURCES:
        return f"'source' {meta.get('source')!r} is not one of {', '.join(SOURCES)}"
    if meta.get("root") is not None and not isinstance(meta.get("root"), str):
        return "'root' is neither null nor a string"
    if meta.get("channels") not in (1, 3) or isinstance(meta.get("channels"), bool):
        return f"'channels' {meta.get('channels')!r} is not 1 or 3"
    if not _is_int(meta.get("resolution")) or meta["resolution"] < 1:
        return f"'resolution' {meta.get('resolution')!r} is not a positive integer"
    names = meta.get("class_names")
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        return "'class_names' is not a non-empty list of strings"
    skipped = meta.get("skipped_files")
    if not isinstance(skipped, list) or not all(isinstance(s, str) for s in skipped):
        return "'skipped_files' is not a list of strings"
    entries = meta.get("labels")
    if not isinstance(entries, list) or not entries:
        return "'labels' is not a non-empty list"
    seen = set()
    for entry in entries:
        problem = _entry_problem(entry, names)
        if problem:
            return problem
        if entry["label"] in seen:
            return f"label {entry['label']} is listed twice"
        seen.add(entry["label"])
    return None


def _entry_problem(entry, names: list[str]) -> str | None:
    if not isinstance(entry, dict):
        return f"a 'labels' entry is not an object: {entry!r}"
    label = entry.get("label")
    if not _is_int(label) or not 0 <= label < len(names):
        return f"'labels' entry has label {label!r}, outside [0, {len(names)})"
    if entry.get("name") != names[label]:
        return f"label {label} is named {entry.get('name')!r} but class_names[{label}] is {names[label]!r}"
    if not _is_int(entry.get("count")) or entry["count"] < 1:
        return f"label {label} has count {entry.get('count')!r}, expected a positive integer"
    shard = entry.get("shard")
    # The shard must resolve inside the output folder: no absolute paths, no '..'.
    if not isinstance(shard, str) or PurePosixPath(shard).is_absolute() or ".." in PurePosixPath(shard).parts:
        return f"label {label} has shard path {shard!r}, expected a path relative to meta.json's folder"
    if not isinstance(entry.get("sha256"), str) or not _SHA256.fullmatch(entry["sha256"]):
        return f"label {label} has no valid sha256"
    return None


def load_meta(meta_path: str | os.PathLike) -> dict:
    """Read and sanity-check a meta.json written by `prepare_dataset`."""
    path = Path(meta_path)
    if not path.is_file():
        raise LabelwiseError(f"{path}: not found; run the data stage first (it writes meta.json last)")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except RecursionError:
        raise LabelwiseError(f"{path}: unreadable meta.json (nested too deeply to be one); {_RERUN}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise LabelwiseError(f"{path}: unreadable or corrupt meta.json ({exc}); {_RERUN}") from None
    problem = _meta_problem(meta)
    if problem:
        raise LabelwiseError(f"{path}: invalid meta.json, {problem}; {_RERUN}")
    return meta


def read_shard_file(shard: str | os.PathLike) -> tuple[np.ndarray, dict]:
    """A shard given by its path, as training, the classifier and the real statistics read it.

    In a prepared dataset's layout (<out>/shards/<label>.h5) it is trusted only through <out>/meta.json
    (`read_shard`: listed, same label, class, source, resolution, channels, count and checksum); a
    data-stage shard there without a meta.json is what an interrupted preparation leaves, and is
    refused.  A shard outside that layout, or not written by the data stage, is checked against its
    own checksum only (`read_images`)."""
    shard = Path(shard)
    meta_path = shard.parent.parent / META_NAME
    if shard.parent.name != SHARD_DIR:
        return read_images(shard)
    if not meta_path.is_file():
        if read_attrs(shard).get("source") in SOURCES:
            raise LabelwiseError(
                f"{shard}: not trusted, the data stage that wrote it did not complete ({meta_path} is missing); "
                "rerun the data stage (`labelwise prepare`, or snakemake) to finish it"
            )
        return read_images(shard)
    meta = load_meta(meta_path)
    target = shard.resolve()
    for entry in meta["labels"]:
        if (meta_path.parent / entry["shard"]).resolve() == target:
            return read_shard(meta_path, entry["label"])
    raise LabelwiseError(f"{shard}: not listed in {meta_path}, so it was not written by the last data stage; {_RERUN}")


def read_shard(meta_path: str | os.PathLike, label: int) -> tuple[np.ndarray, dict]:
    """Images (uint8 N×C×H×W) and attributes of one label's shard, checked against meta.json."""
    meta_path = Path(meta_path)
    meta = load_meta(meta_path)
    label = operator.index(label)
    entry = next((e for e in meta["labels"] if e["label"] == label), None)
    if entry is None:
        prepared = ", ".join(str(e["label"]) for e in meta["labels"])
        raise LabelwiseError(
            f"{meta_path}: label {label} was not prepared (prepared: {prepared}); "
            "add it to data.labels and rerun the data stage"
        )
    path = meta_path.parent / entry["shard"]
    channels, resolution = meta["channels"], meta["resolution"]
    expect = {
        "label": label,
        "class_name": entry["name"],
        "source": meta["source"],
        "resolution": resolution,
        "channels": channels,
    }
    # Everything meta.json says is checked before a pixel is read: what the shard declares bounds
    # what reading it allocates (labelwise.images.open_images).
    with open_images(path) as shard:
        for key, want in expect.items():
            if shard.attrs.get(key) != want:
                raise LabelwiseError(
                    f"{path}: attribute {key}={shard.attrs.get(key)!r} but {want!r} was expected; "
                    f"the file does not belong to this dataset/config: {_RERUN}"
                )
        n = shard.shape[0]
        if n == 0:
            raise LabelwiseError(f"{path}: holds no images for label {label}; {_RERUN}")
        if shard.shape[1:] != (channels, resolution, resolution):
            raise LabelwiseError(
                f"{path}: images are {shard.shape[1:]}, meta.json says {(channels, resolution, resolution)}; {_RERUN}"
            )
        if shard.attrs.get("sha256") != entry["sha256"]:
            raise LabelwiseError(
                f"{path}: checksum does not match the one meta.json recorded (the shard was rewritten "
                f"or replaced after meta.json); {_RERUN}"
            )
        if n != entry["count"]:
            raise LabelwiseError(f"{path}: holds {n} images, meta.json says {entry['count']}; {_RERUN}")
        return shard.read(), dict(shard.attrs)
