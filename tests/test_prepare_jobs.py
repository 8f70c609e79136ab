"""The image-folder data stage at ImageNet scale (issue 15): one job per label that reads only its
class folder and streams it into the shard, meta.json assembled from the shards' attributes.

Checked here: the per-label jobs write the same pixels and checksums as the single job they replace
(benchmarks/reference_prepare.py, the old implementation kept as the reference), in process and
through the Snakefile; one more label in data.labels prepares only that label; a label's job needs
the same memory whether the folder has 2 classes or 20; parsing the Snakefile for hundreds of labels
touches no class folder; JPEG draft decoding stays within its documented tolerance and is off by
default.
"""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import REPO, fake_cifar10, snakemake_env, write_cifar
from conftest import snakemake as pipeline_snakemake
from PIL import Image

from labelwise.data import assemble_meta, load_meta, prepare_dataset, prepare_label, read_shard
from labelwise.data.sources import DRAFT_MARGIN, read_image

sys.path.insert(0, str(REPO / "benchmarks"))
import reference_prepare  # noqa: E402  (benchmarks/: the pre-issue-15 single job)


def jpeg_bytes(array: np.ndarray, **kwargs) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="JPEG", quality=90, **kwargs)
    return buffer.getvalue()


def make_folder(root: Path, n_classes: int, per_class: int, size=(60, 45), seed: int = 0) -> Path:
    """root/class<k>/<i>.jpg: random JPEGs of `size` (width, height)."""
    rng = np.random.default_rng(seed)
    for k in range(n_classes):
        folder = root / f"class{k:03d}"
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            (folder / f"{i:03d}.jpg").write_bytes(
                jpeg_bytes(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))
            )
    return root


@pytest.fixture
def mixed_root(tmp_path) -> Path:
    """Four classes of JPEGs plus the awkward cases: EXIF-rotated JPEG, grey and RGBA PNGs, a
    portrait image, a truncated JPEG, a text file and a hidden file."""
    root = make_folder(tmp_path / "images", 4, 9, size=(50, 37))
    rng = np.random.default_rng(1)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated 90°: exif_transpose must turn it upright
    (root / "class000" / "rotated.jpg").write_bytes(
        jpeg_bytes(rng.integers(0, 256, (30, 70, 3), dtype=np.uint8), exif=exif.tobytes())
    )
    Image.fromarray(rng.integers(0, 256, (40, 33), dtype=np.uint8), "L").save(root / "class001" / "grey.png")
    Image.fromarray(rng.integers(0, 256, (20, 64, 4), dtype=np.uint8), "RGBA").save(root / "class001" / "alpha.png")
    (root / "class002" / "cut.jpg").write_bytes((root / "class002" / "000.jpg").read_bytes()[:300])
    (root / "class002" / "notes.txt").write_text("not an image")
    (root / "class003" / ".DS_Store").write_bytes(b"\0\1")
    return root


def assert_same_as_single_job(out: Path, root: Path, labels: list[int], resolution: int, tmp_path: Path) -> dict:
    """out/meta.json and its shards hold exactly what the old single job makes of the same folder."""
    names, expected, skipped = reference_prepare.load_imagefolder(root, labels, resolution)
    ref_sums = reference_prepare.prepare(root, tmp_path / "reference", labels, resolution)
    meta = load_meta(out / "meta.json")
    assert meta["class_names"] == names and meta["skipped_files"] == skipped
    assert [e["label"] for e in meta["labels"]] == labels
    for entry in meta["labels"]:
        label = entry["label"]
        images, attrs = read_shard(out / "meta.json", label)
        np.testing.assert_array_equal(images, expected[label])  # byte-identical pixels, same order
        assert entry["sha256"] == attrs["sha256"] == ref_sums[label]
        assert entry["count"] == len(expected[label])
    return meta


def test_per_label_preparation_matches_the_single_job(tmp_path, mixed_root):
    """prepare_dataset (per label, streamed in chunks, three decoding threads) against the reference."""
    meta = prepare_dataset("imagefolder", tmp_path / "out", root=mixed_root, resolution=16, threads=3)
    assert sorted(meta["skipped_files"]) == ["class002/cut.jpg", "class002/notes.txt"]
    assert meta["jpeg_draft"] is False
    assert_same_as_single_job(tmp_path / "out", mixed_root, [0, 1, 2, 3], 16, tmp_path)
    # One label alone, more images than a decoding chunk: the same shard as within the whole run.
    big = make_folder(tmp_path / "big", 1, 150, size=(40, 30), seed=3)
    entry = prepare_label(tmp_path / "big_out", big, 0, resolution=16, threads=2)
    assemble_meta(tmp_path / "big_out", big, [0], resolution=16)
    assert entry["count"] == 150
    assert_same_as_single_job(tmp_path / "big_out", big, [0], 16, tmp_path / "ref_big")


def test_assemble_meta_refuses_a_shard_of_another_setting(tmp_path, mixed_root):
    prepare_label(tmp_path, mixed_root, 0, resolution=16)
    prepare_label(tmp_path, mixed_root, 1, resolution=32)
    from labelwise.errors import LabelwiseError

    with pytest.raises(LabelwiseError, match=r"shards/1\.h5: written with resolution=32, this dataset needs 16"):
        assemble_meta(tmp_path, mixed_root, [0, 1], resolution=16)
    assert not (tmp_path / "meta.json").exists()


# --------------------------------------------------------------------------- through the Snakefile


def snakemake(workdir: Path, config: dict, *args: str) -> subprocess.CompletedProcess:
    """test_pipeline.snakemake, which must succeed."""
    result = pipeline_snakemake(workdir, config, *args)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    return result


def planned(result: subprocess.CompletedProcess, rule: str) -> list[str]:
    """The outputs of the `rule` jobs a dry run lists."""
    return sorted(re.findall(rf"^rule {rule}:\n(?:    (?!output:).*\n)*    output: (\S+)", result.stdout, flags=re.M))


@pytest.mark.e2e
def test_pipeline_prepares_per_label_and_one_more_label_only_that_one(tmp_path, mixed_root):
    config = {
        "data": {"source": "imagefolder", "root": str(mixed_root), "resolution": 16, "labels": [0, 2]},
        "runtime": {"device": "cpu", "threads": 2},
    }
    meta = "results/imagefolder/meta.json"
    first = snakemake(tmp_path, config, meta)
    assert (first.stdout + first.stderr).count("rule prepare_label:") == 2
    for label in (0, 2):  # one job per label, each with its own log and progress summary
        log = (tmp_path / f"logs/imagefolder/prepare/{label}.log").read_text()
        assert re.search(
            rf"label {label} \(class00{label}\): \d+ files in .* files/s\), \d+ images, \d+ skipped, 2 thread", log
        ), log
    assert "class002/cut.jpg" in (tmp_path / "logs/imagefolder/prepare/2.log").read_text()  # the warning
    assert_same_as_single_job(tmp_path / "results/imagefolder", mixed_root, [0, 2], 16, tmp_path / "ref")

    more = dict(config, data=dict(config["data"], labels=[0, 1, 2]))
    dry = snakemake(tmp_path, more, "--dry-run", meta)
    assert planned(dry, "prepare_label") == ["results/imagefolder/shards/1.h5"]
    assert planned(dry, "prepare") == [meta]
    # and the training of the labels already there would not be redone for the new meta.json
    train = snakemake(tmp_path, more, "--dry-run", "results/imagefolder/wcgan/generators/0.pt")
    assert planned(train, "prepare_label") == ["results/imagefolder/shards/1.h5"]


AUDIT = """
import atexit, json, sys
seen = []
def hook(event, args):
    if event in ("open", "os.listdir", "os.scandir") and args:
        seen.append([event, str(args[0])])
sys.addaudithook(hook)
atexit.register(lambda: open(sys.argv[1], "w").write(json.dumps(seen)))
from snakemake.cli import main
main(sys.argv[2:])
"""


@pytest.mark.e2e
def test_snakefile_reads_no_class_folder_at_parse_time(tmp_path):
    """A dry run for 300 labels lists data.root once and opens or lists no class folder: every per-label
    read happens in the per-label jobs.  (The 1,000-label dry-run time: benchmarks, case d.)"""
    n = 300
    root = tmp_path / "classes"
    for k in range(n):
        (root / f"n{k:08d}").mkdir(parents=True)
    (tmp_path / "config.yaml").write_text(yaml.safe_dump({"data": {"source": "imagefolder", "root": str(root)}}))
    events = tmp_path / "events.json"
    cmd = [
        sys.executable,
        "-c",
        AUDIT,
        str(events),
        "results/imagefolder/meta.json",
        "-n",
        "-s",
        str(REPO / "Snakefile"),
        "--directory",
        str(tmp_path),
        "--configfile",
        str(tmp_path / "config.yaml"),
    ]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=snakemake_env())
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    assert len(planned(result, "prepare_label")) == n
    touched = [e for e in json.loads(events.read_text()) if e[1].startswith(str(root))]
    assert touched and all(path == str(root) for _, path in touched), touched[:5]  # the root, never a class


# --------------------------------------------------------------------------- memory


PEAK = """
import sys
sys.path.insert(0, sys.argv[4])
mode, root, out = sys.argv[1:4]
if mode == "label":
    from labelwise.data import prepare_label
    prepare_label(out, root, 0, resolution=128)
elif mode == "dataset":
    from labelwise.data import prepare_dataset
    prepare_dataset("imagefolder", out, root=root, resolution=128)
else:  # the old single job's way: every label's images in memory before anything is written
    import reference_prepare
    from labelwise.data import num_classes
    reference_prepare.load_imagefolder(root, list(range(num_classes("imagefolder", root))), 128)
# VmHWM: the peak RSS of this process image.  (getrusage's ru_maxrss is not reset by exec: a child
# of this large pytest process would report the parent's peak.)
print(next(line.split()[1] for line in open("/proc/self/status") if line.startswith("VmHWM:")))  # KiB
"""
# 25 images of 3×128×128 per label: 1.2 MB per label, 22 MB more for 20 labels than for 2.
PER_CLASS, TOLERANCE_KIB = 25, 6 * 1024


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="peak RSS is read from /proc/self/status (Linux)")
def test_peak_memory_of_a_label_job_does_not_grow_with_the_labels(tmp_path):
    """Peak RSS (VmHWM) of a fresh process: one label's job (and the whole stage run as one process, label by
    label) on a folder of 2 classes vs 20 classes.  Tolerance 6 MiB, a quarter of the 22 MB that 18
    more labels' pixels take; the old way of holding every label is measured too, and exceeds it."""
    peaks = {}
    for n in (2, 20):
        root = make_folder(tmp_path / f"c{n}", n, PER_CLASS, size=(170, 128), seed=n)
        for mode in ("label", "dataset", "hold"):
            cmd = [
                sys.executable,
                "-c",
                PEAK,
                mode,
                str(root),
                str(tmp_path / f"out-{mode}-{n}"),
                str(REPO / "benchmarks"),
            ]
            result = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
            assert result.returncode == 0, result.stderr[-3000:]
            peaks[mode, n] = int(result.stdout.split()[-1])
    growth = {mode: peaks[mode, 20] - peaks[mode, 2] for mode in ("label", "dataset", "hold")}
    print(f"peak RSS KiB {peaks}; growth 2 -> 20 labels {growth}")
    assert growth["label"] < TOLERANCE_KIB, growth
    assert growth["dataset"] < TOLERANCE_KIB, growth
    assert growth["hold"] > TOLERANCE_KIB, growth  # the measurement does see a job that holds every label


# --------------------------------------------------------------------------- JPEG draft decoding


def draft_samples(tmp_path) -> dict[str, Path]:
    """500×375 JPEGs of random noise and of smoothed noise, and a real photograph when matplotlib's
    sample data is installed."""
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, (375, 500, 3), dtype=np.uint8)
    smooth = np.clip(gaussian_filter(rng.normal(128, 60, (375, 500, 3)), (6, 6, 0)) * 3 - 256, 0, 255).astype(np.uint8)
    paths = {}
    for name, array in (("noise", noise), ("smooth", smooth)):
        paths[name] = tmp_path / f"{name}.jpg"
        paths[name].write_bytes(jpeg_bytes(array))
    import matplotlib

    photo = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    if photo.is_file():
        paths["photo"] = photo
    return paths


# The tolerance documented in labelwise/data/sources.py (DRAFT_MARGIN) and the README.
DRAFT_MEAN, DRAFT_MAX = 2.0, 16


def test_jpeg_draft_stays_within_its_documented_tolerance(tmp_path):
    differs = []
    for name, path in draft_samples(tmp_path).items():
        for resolution in (32, 64, 128):
            full = read_image(path, resolution)[0].astype(int)
            draft = read_image(path, resolution, draft=True)[0].astype(int)
            diff = np.abs(full - draft)
            assert diff.mean() <= DRAFT_MEAN and diff.max() <= DRAFT_MAX, (name, resolution, diff.mean(), diff.max())
            with Image.open(path) as image:
                reduced = min(image.size) >= 2 * DRAFT_MARGIN * resolution  # a DCT scale of 1/2 or less applies
            assert (diff.max() > 0) == reduced, (name, resolution)
            differs.append(diff.max() > 0)
    assert any(differs)  # the draft is really applied; and it is more than rounding, hence opt-in


def test_jpeg_draft_is_off_by_default_and_leaves_other_formats_alone(tmp_path):
    rng = np.random.default_rng(2)
    array = rng.integers(0, 256, (375, 500, 3), dtype=np.uint8)
    png = tmp_path / "a.png"
    Image.fromarray(array).save(png)
    np.testing.assert_array_equal(read_image(png, 32, draft=True)[0], read_image(png, 32)[0])
    root = tmp_path / "images" / "only"
    root.mkdir(parents=True)
    (root / "a.jpg").write_bytes(jpeg_bytes(array))
    (root / "b.jpg").write_bytes(
        jpeg_bytes(array[::-1].copy())
    )  # a class needs two images (the classifier holds one out)
    plain = prepare_dataset("imagefolder", tmp_path / "plain", root=root.parent, resolution=32)
    drafted = prepare_dataset("imagefolder", tmp_path / "draft", root=root.parent, resolution=32, jpeg_draft=True)
    assert plain["jpeg_draft"] is False and drafted["jpeg_draft"] is True
    assert plain["labels"][0]["sha256"] != drafted["labels"][0]["sha256"]
    assert_same_as_single_job(tmp_path / "plain", root.parent, [0], 32, tmp_path / "ref")


def test_a_label_job_logs_progress_with_rate_and_eta(tmp_path, caplog):
    import logging

    root = make_folder(tmp_path / "images", 1, 150, size=(24, 18))
    with caplog.at_level(logging.INFO, logger="labelwise.data"):
        prepare_label(tmp_path / "out", root, 0, resolution=16, progress_seconds=1e-9)
    lines = [r.getMessage() for r in caplog.records]
    progress = [
        line
        for line in lines
        if re.fullmatch(r"label 0 \(class000\): \d+/150 files \(\d+%\) [\d.]+ files/s ETA \d+m\d\ds", line)
    ]
    assert [line.split(":")[1].split()[0] for line in progress] == ["64/150", "128/150"]  # one per decoded chunk
    assert re.fullmatch(
        r"label 0 \(class000\): 150 files in [\d.]+ s \([\d.]+ files/s\), "
        r"150 images, 0 skipped, 1 thread\(s\); wrote .*",
        lines[-1],
    )


def test_cifar_preparation_holds_the_dataset_once(tmp_path):
    """CIFAR stays one job (its batch files hold every label), but it keeps one copy of the training
    images, plus what reading and splitting one batch file takes, and hands them out one label at a
    time.  Peak traced (tracemalloc: numpy's buffers and the unpickled bytes) over a 30.7 MB fake
    CIFAR-10 of five 6.1 MB batches: 52 MB; the implementation before, which assembled every
    label's array while still holding the per-batch pieces, peaked at 68 MB."""
    import tracemalloc

    files, images, _ = fake_cifar10(np.random.default_rng(0), per_batch=2000)
    write_cifar(files, tmp_path / "raw")
    batch = files["data_batch_1"][b"data"].nbytes
    del files
    tracemalloc.start()
    try:
        prepare_dataset("cifar10", tmp_path / "out", root=tmp_path / "raw")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < images.nbytes + 4 * batch, (peak / 1e6, images.nbytes / 1e6, batch / 1e6)
