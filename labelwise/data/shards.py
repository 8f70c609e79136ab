"""Per-label shards: write `out_dir/shards/{label}.h5` plus `out_dir/meta.json`, and read them back.

`prepare_dataset` reads the raw dataset once (`labelwise.data.sources`) and writes one HDF5 shard per
selected label through `labelwise.images.write_images`, then meta.json.  meta.json is written last
and is the stage's completion marker: it exists only once every shard it lists is complete, and it
records each shard's image checksum, so `read_shard` notices a shard that was replaced, corrupted or
swapped with another label's after the fact.
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
from ..images import images_sha256, read_images, write_images
from ..io import write_json
from .sources import SOURCES, RawData, check_source, load_source, num_classes

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


def _write_shard(out: Path, raw: RawData, label: int, source: str, root) -> dict:
    images = raw.images[label]
    name = raw.class_names[label]
    if len(images) == 0:
        raise LabelwiseError(
            f"{source}: label {label} ({name}) has no images in {root}; drop it from data.labels"
        )
    shard = f"{SHARD_DIR}/{label}.h5"
    write_images(
        out / shard, images, label=label, class_name=name, source=source,
        resolution=raw.resolution, channels=raw.channels,
    )
    log.info("wrote %s: %d images of label %d (%s)", out / shard, len(images), label, name)
    return {"label": label, "name": name, "count": int(len(images)), "shard": shard, "sha256": images_sha256(images)}


def prepare_dataset(source: str, out_dir: str | os.PathLike, *, root: str | os.PathLike | None = None,
                    labels: list[int] | None = None, resolution: int = 64, download: bool = False,
                    name: str | None = None) -> dict:
    """Read `source` once; write `out_dir/shards/{label}.h5` per selected label, then `out_dir/meta.json`.

    `resolution` applies to imagefolder only; mnist5k (28) and CIFAR (32) keep their native size.
    Returns the meta dict that was written.
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
    raw = load_source(source, root, selected, resolution=resolution, download=download)
    entries = [_write_shard(out, raw, label, source, root) for label in selected]
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
    write_json(out / META_NAME, meta)
    log.info("wrote %s (%d images in %d shards)", out / META_NAME, sum(e["count"] for e in entries), len(entries))
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
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise LabelwiseError(f"{path}: unreadable or corrupt meta.json ({exc}); {_RERUN}") from None
    problem = _meta_problem(meta)
    if problem:
        raise LabelwiseError(f"{path}: invalid meta.json, {problem}; {_RERUN}")
    return meta


def meta_beside(shard: str | os.PathLike) -> Path | None:
    """The meta.json of the prepared dataset that `shard` sits in (<out>/shards/<label>.h5 ->
    <out>/meta.json), or None when the shard is not in that layout or no meta.json is there."""
    shard = Path(shard)
    meta_path = shard.parent.parent / META_NAME
    return meta_path if shard.parent.name == SHARD_DIR and meta_path.is_file() else None


def read_shard_file(shard: str | os.PathLike) -> tuple[np.ndarray, dict]:
    """A shard given by its path, as training reads it: checked against the meta.json of its dataset
    (`read_shard`: label, class, source, resolution, channels, count, checksum) when it sits in a
    prepared dataset's layout, otherwise against its own checksum only (`read_images`)."""
    meta_path = meta_beside(shard)
    if meta_path is None:
        return read_images(shard)
    meta = load_meta(meta_path)
    target = Path(shard).resolve()
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
    images, attrs = read_images(path, expect={
        "label": label, "class_name": entry["name"], "source": meta["source"],
        "resolution": resolution, "channels": channels,
    })
    if len(images) == 0:
        raise LabelwiseError(f"{path}: holds no images for label {label}; {_RERUN}")
    if images.shape[1:] != (channels, resolution, resolution):
        raise LabelwiseError(
            f"{path}: images are {images.shape[1:]}, meta.json says {(channels, resolution, resolution)}; {_RERUN}"
        )
    if attrs.get("sha256") != entry["sha256"]:
        raise LabelwiseError(
            f"{path}: checksum does not match the one meta.json recorded (the shard was rewritten "
            f"or replaced after meta.json); {_RERUN}"
        )
    if len(images) != entry["count"]:
        raise LabelwiseError(f"{path}: holds {len(images)} images, meta.json says {entry['count']}; {_RERUN}")
    return images, attrs
