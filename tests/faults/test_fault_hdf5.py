"""Image files that read other files or declare more than they hold (issue 23 point 1): a shard or a
samples file arrives from another user or site, so every stage that reads one (training, the label
classifier, the real statistics, evaluation, the sample grid) opens it through the one trusted reader,
`labelwise.images.open_images`.  Each hostile file below is consistent in itself (count, checksum,
meta.json) and is refused in one line naming the file and what is wrong, before a pixel is read;
a shard declaring 10^6 or 10^8 images in a few KiB is refused under an address-space limit
(docs/faults.md, "Image files from elsewhere").
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import TINY_MODEL, one_error_line, run_limited

import labelwise.images
from labelwise.errors import LabelwiseError
from labelwise.images import images_sha256, read_images, write_images

pytestmark = pytest.mark.faults

N, SIDE = 8, 28
ATTRS = dict(label=0, class_name="0", source="mnist5k", resolution=SIDE, channels=1)


def _pixels(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (N, 1, SIDE, SIDE), dtype=np.uint8)


def _finish(f: h5py.File, pixels: np.ndarray | None, count: int = N) -> None:
    """Attributes as labelwise writes them: the file is consistent in itself."""
    f.attrs.update(ATTRS)
    f.attrs["count"] = count
    if pixels is not None:
        f.attrs["sha256"] = images_sha256(pixels)


def external_storage(path: Path, other: Path, secret: Path) -> None:
    """`images` whose bytes HDF5 reads from another file (here a stand-in for /etc/passwd)."""
    with h5py.File(path, "w") as f:
        f.create_dataset("images", shape=(N, 1, SIDE, SIDE), dtype=np.uint8, external=[(str(secret), 0, N * 784)])
        pixels = np.frombuffer(secret.read_bytes()[: N * 784], np.uint8).reshape(N, 1, SIDE, SIDE)
        _finish(f, pixels)


def external_link(path: Path, other: Path, secret: Path) -> None:
    """`images` an HDF5 external link to another user's image file."""
    with h5py.File(path, "w") as f:
        f["images"] = h5py.ExternalLink(str(other), "/images")
        _finish(f, read_images(other)[0])


def soft_link(path: Path, other: Path, secret: Path) -> None:
    with h5py.File(path, "w") as f:
        f["hidden"] = _pixels(1)
        f["images"] = h5py.SoftLink("/hidden")
        _finish(f, _pixels(1))


def virtual_dataset(path: Path, other: Path, secret: Path) -> None:
    """`images` a virtual dataset mapping another file's images."""
    layout = h5py.VirtualLayout(shape=(N, 1, SIDE, SIDE), dtype=np.uint8)
    layout[:] = h5py.VirtualSource(str(other), "images", shape=(N, 1, SIDE, SIDE))
    with h5py.File(path, "w") as f:
        f.create_virtual_dataset("images", layout)
        _finish(f, read_images(other)[0])


def a_group(path: Path, other: Path, secret: Path) -> None:
    with h5py.File(path, "w") as f:
        f.create_group("images")
        _finish(f, None)


def a_string(path: Path, other: Path, secret: Path) -> None:
    with h5py.File(path, "w") as f:
        f["images"] = "not pixels"
        _finish(f, None)


def floats(path: Path, other: Path, secret: Path) -> None:
    with h5py.File(path, "w") as f:
        f["images"] = _pixels(2).astype(np.float32)
        _finish(f, None)


def rank_3(path: Path, other: Path, secret: Path) -> None:
    with h5py.File(path, "w") as f:
        f["images"] = _pixels(3)[:, 0]
        _finish(f, None)


def lzf_filter(path: Path, other: Path, secret: Path) -> None:
    """A filter labelwise does not write (a filter plugin would be code loaded by HDF5)."""
    with h5py.File(path, "w") as f:
        f.create_dataset("images", data=_pixels(4), chunks=(1, 1, SIDE, SIDE), compression="lzf")
        _finish(f, _pixels(4))


def declares_more(path: Path, other: Path, secret: Path, n: int = 10**8) -> None:
    """A few KiB declaring `n` images: one chunk written, the rest would be HDF5's fill value."""
    with h5py.File(path, "w") as f:
        data = f.create_dataset(
            "images", shape=(n, 1, SIDE, SIDE), dtype=np.uint8, chunks=(1, 1, SIDE, SIDE), compression="gzip"
        )
        data[0] = 7
        _finish(f, None, count=n)
        f.attrs["sha256"] = "0" * 64


# kind -> (builder, what the one line says)
KINDS = {
    "external-storage": (external_storage, "uses HDF5 external storage (its data lies in"),
    "external-link": (external_link, "'images' is an external link to"),
    "soft-link": (soft_link, "'images' is a soft link (to /hidden)"),
    "virtual-dataset": (virtual_dataset, "'images' is a virtual dataset"),
    "group": (a_group, "'images' is a group, not a dataset"),
    "string": (a_string, "expected uint8 N×C×H×W"),
    "float32": (floats, "images are float32 of shape (8, 1, 28, 28), expected uint8 N×C×H×W"),
    "rank-3": (rank_3, "expected uint8 N×C×H×W"),
    "lzf-filter": (lzf_filter, "uses the HDF5 filter(s) lzf (32000)"),
    "declares-more": (declares_more, "declares 100000000 images of 1×28×28 (73.0 GiB) but stores"),
}


def _meta(ds: Path, counts: dict[int, tuple[int, str]]) -> None:
    """meta.json as the data stage writes it, listing each shard with `counts[label]` = (count, sha256)."""
    meta = {
        "dataset": "mnist5k",
        "source": "mnist5k",
        "root": None,
        "channels": 1,
        "resolution": SIDE,
        "class_names": ["0", "1"],
        "labels": [
            {"label": k, "name": str(k), "count": n, "shard": f"shards/{k}.h5", "sha256": sha}
            for k, (n, sha) in sorted(counts.items())
        ],
        "skipped_files": [],
    }
    (ds / "meta.json").write_text(json.dumps(meta))


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A prepared two-label dataset, another user's image file, a secret file and a trained classifier."""
    from labelwise.metrics.classifier import train_classifier

    root = tmp_path_factory.mktemp("hdf5")
    ds = root / "ds"
    for k in (0, 1):
        write_images(ds / "shards" / f"{k}.h5", _pixels(10 + k), **dict(ATTRS, label=k, class_name=str(k)))
    _meta(ds, {k: (N, images_sha256(_pixels(10 + k))) for k in (0, 1)})
    other = root / "elsewhere" / "samples.h5"
    write_images(other, _pixels(20), **ATTRS)
    secret = root / "secret.txt"
    secret.write_bytes(bytes(range(256)) * 40)
    classifier = root / "classifier.pt"
    train_classifier({k: ds / "shards" / f"{k}.h5" for k in (0, 1)}, classifier, epochs=1, seed=0, device="cpu")
    return {"root": root, "ds": ds, "other": other, "secret": secret, "classifier": classifier}


def _hostile_shard(world, tmp_path, kind) -> Path:
    """The dataset copied, its label-0 shard replaced by a hostile one that meta.json vouches for."""
    import shutil

    ds = tmp_path / "ds"
    shutil.copytree(world["ds"], ds)
    shard = ds / "shards" / "0.h5"
    KINDS[kind][0](shard, world["other"], world["secret"])
    with h5py.File(shard, "r") as f:  # what an attacker would put in meta.json: the file's own claims
        count, sha = int(f.attrs["count"]), str(f.attrs.get("sha256", "0" * 64))
    _meta(ds, {0: (count, sha), 1: (N, images_sha256(_pixels(11)))})
    return shard


def _train(world, tmp_path, path):
    from labelwise.train import Budget, Outputs, train_label

    out = Outputs(generator=tmp_path / "g.pt", log=tmp_path / "log.csv", checkpoints=tmp_path / "ckpt")
    train_label(path, "wcgan", dict(TINY_MODEL), Budget(iterations=2), 0, out, label=0, threads=1)


def _classifier(world, tmp_path, path):
    from labelwise.metrics.classifier import train_classifier

    train_classifier({0: path, 1: path.parent / "1.h5"}, tmp_path / "c.pt", epochs=1, seed=0, device="cpu")


def _real_stats(world, tmp_path, path):
    from labelwise.metrics.classifier import ClassifierSpace
    from labelwise.metrics.realstats import compute_real_stats

    compute_real_stats(path, ClassifierSpace(world["classifier"]))


def _evaluate(world, tmp_path, path):
    from labelwise.metrics import evaluate_model

    shards = {k: world["ds"] / "shards" / f"{k}.h5" for k in (0, 1)}
    samples = {0: path, 1: world["other"]}
    evaluate_model(
        "wcgan",
        samples,
        shards,
        stats_dir=tmp_path / "stats",
        classifier_path=world["classifier"],
        settings={"inception": "off"},
        device="cpu",
    )


def _grid(world, tmp_path, path):
    from labelwise.plots import sample_grid

    sample_grid([path], [tmp_path / "grid.png", tmp_path / "grid.pdf"])


# stage -> (runs it on the hostile file, reads it as a shard (True) or as a samples file)
STAGES = {
    "train": (_train, True),
    "classifier": (_classifier, True),
    "real-stats": (_real_stats, True),
    "evaluate": (_evaluate, False),
    "sample-grid": (_grid, False),
}


@pytest.mark.parametrize("stage", sorted(STAGES))
@pytest.mark.parametrize("kind", sorted(KINDS))
def test_hostile_image_file_is_refused_by_every_stage_that_reads_one(world, tmp_path, kind, stage):
    run, as_shard = STAGES[stage]
    if as_shard:
        path = _hostile_shard(world, tmp_path, kind)
    else:
        path = tmp_path / "samples" / "0.h5"
        path.parent.mkdir()
        KINDS[kind][0](path, world["other"], world["secret"])
    with pytest.raises(LabelwiseError) as err:
        run(world, tmp_path, path)
    message = str(err.value)
    assert message.startswith(f"{path}: ") and KINDS[kind][1] in message and "\n" not in message, message
    assert "delete it and rerun" in message
    written = sorted(p.name for p in tmp_path.iterdir() if p.name not in ("ds", "samples"))
    assert written == [], written  # no generator, log, checkpoint, classifier, statistics or figure


@pytest.mark.parametrize("declared", [10**6, 10**8])
def test_shard_declaring_more_than_it_holds_is_refused_under_a_memory_limit(world, tmp_path, declared):
    """Through `labelwise train` in a process limited to 1.5 GiB of address space (torch takes about
    0.7): a 10^6-image shard (747 MiB of pixels) or a 10^8 one (73 GiB) of a few KiB is refused from
    its header; before, the first was refused after ~1 GB of RSS, the second was a MemoryError."""
    ds = tmp_path / "ds"
    (ds / "shards").mkdir(parents=True)
    shard = ds / "shards" / "0.h5"
    declares_more(shard, world["other"], world["secret"], n=declared)
    assert shard.stat().st_size < 16 << 10
    with h5py.File(shard, "r") as f:
        _meta(ds, {0: (declared, str(f.attrs["sha256"])), 1: (N, images_sha256(_pixels(11)))})
    settings = {"model": TINY_MODEL, "budget": {"iterations": 2, "checkpoint_every": 1}, "seed": 0}
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "labelwise.cli", "train", "--model", "wcgan", "--label", "0"]
    cmd += ["--settings", json.dumps(settings), "--device", "cpu", "--threads", "1"]
    cmd += ["--generator", str(out / "g.pt"), "--log", str(out / "log.csv"), "--checkpoints", str(out / "ckpt")]
    refused = run_limited([*cmd, "--shard", str(shard)], memory=3 << 29)
    line = one_error_line(refused)
    assert f"{shard}: declares {declared} images of 1×28×28" in line and "but stores" in line, line
    assert not out.exists()
    # The control: the same process under the same limit trains on a good shard.
    good = run_limited([*cmd, "--shard", str(world["ds"] / "shards" / "0.h5")], memory=3 << 29)
    assert good.returncode == 0 and (out / "g.pt").is_file(), good.stderr[-3000:]


def test_the_checksum_is_computed_while_streaming(world, tmp_path, monkeypatch):
    """Blocks of 3 images (instead of 16 MiB): the streamed digest equals the whole-array one, and a
    changed image in a later block is still caught."""
    monkeypatch.setattr(labelwise.images, "READ_BLOCK_BYTES", 3 * SIDE * SIDE)
    path = world["ds"] / "shards" / "1.h5"
    images, attrs = read_images(path)
    np.testing.assert_array_equal(images, _pixels(11))
    damaged = tmp_path / "damaged.h5"
    damaged.write_bytes(path.read_bytes())
    with h5py.File(damaged, "r+") as f:
        f["images"][7] = 255 - f["images"][7]
    with pytest.raises(LabelwiseError, match="checksum mismatch"):
        read_images(damaged)
