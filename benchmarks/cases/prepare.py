"""Case h: image-folder preparation — the per-label jobs vs the single job they replace, in images/s
per core, and the projected time for ImageNet-1k on one 16-core node.

Data: a synthetic ImageNet-like folder made in the run's temporary directory, 20 classes × 50 JPEGs
of 500×375 px (ImageNet's typical size; quality 90), random content: random low-frequency colour
fields plus pixel noise, about 60 KB each.  Resolution 64 (the imagenet1k preset).
Reference: the single job as it was before (benchmarks/reference_prepare.py: every label decoded
into memory on one thread, then written).  Candidates, all on one thread unless named: the per-label
jobs (`prepare_label` for each label in turn, streamed into the shard; what the pipeline runs as
one job per label), the same with `jpeg_draft`, and with 2 decoding threads.  Per core: images /
seconds / threads.  The projection divides ImageNet-1k's 1,281,167 training images by 16 cores ×
the per-core rate and adds 1,000 job start-ups (a fresh Python that imports labelwise.data and
prepares a two-image label, measured here) spread over the 16 cores; it assumes the cores do not
share a bottleneck (file system, memory bandwidth), which one core's measurement cannot show.
"""

from __future__ import annotations

import io
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from harness import compare, timed

NAME = "prepare"
DESCRIPTION = "image-folder preparation: per-label streamed jobs (1 thread, draft, 2 threads) vs the old single job"

IMAGENET_IMAGES, IMAGENET_LABELS, NODE_CORES = 1_281_167, 1000, 16
RESOLUTION = 64


def make_folder(root: Path, classes: int, per_class: int, seed: int = 0) -> int:
    from PIL import Image

    rng = np.random.default_rng(seed)
    total = 0
    for k in range(classes):
        folder = root / f"n{k:08d}"
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            field = Image.fromarray(rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)).resize((500, 375), Image.BICUBIC)
            pixels = np.clip(np.asarray(field, dtype=np.int16) + rng.normal(0, 10, (375, 500, 3)), 0, 255).astype(
                np.uint8
            )
            buffer = io.BytesIO()
            Image.fromarray(pixels).save(buffer, format="JPEG", quality=90)
            (folder / f"{i:04d}.JPEG").write_bytes(buffer.getvalue())
            total += 1
    return total


STARTUP = """
import sys
import labelwise.cli  # what the rule's script imports
from labelwise.data import prepare_label
prepare_label(sys.argv[2], sys.argv[1], 0, resolution=64)
"""


def _job_startup_seconds(root: Path, out: Path, repeats: int) -> float:
    """A fresh interpreter preparing a two-image label (the fewest a label may have: the classifier
    trains on one and holds one out): the fixed cost of one per-label job (Snakemake's own per-job
    cost comes on top)."""
    one = root.parent / "two-images"
    (one / "c").mkdir(parents=True, exist_ok=True)
    for image in sorted((root / sorted(p.name for p in root.iterdir())[0]).iterdir())[:2]:
        (one / "c" / image.name).write_bytes(image.read_bytes())
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", STARTUP, str(one), str(out)], check=True, capture_output=True)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def run(ctx) -> list:
    import reference_prepare

    from labelwise.data import prepare_label

    classes, per_class = (4, 10) if ctx.quick else (20, 50)
    root = ctx.tmp / "imagenet-like"
    n = make_folder(root, classes, per_class)
    labels = list(range(classes))
    out = ctx.tmp / "prepare-out"

    def per_label(threads=1, draft=False):
        return lambda: [
            prepare_label(out, root, k, resolution=RESOLUTION, threads=threads, jpeg_draft=draft) for k in labels
        ]

    rows = compare(
        f"h.prepare/{classes}x{per_class} JPEGs 500x375 -> 64 px",
        (
            "single job, all labels in memory (before)",
            timed(lambda: reference_prepare.prepare(root, ctx.tmp / "ref-out", labels, RESOLUTION)),
        ),
        {
            "per-label jobs, 1 thread": timed(per_label()),
            "per-label jobs, 1 thread, jpeg_draft": timed(per_label(draft=True)),
            "per-label jobs, 2 threads": timed(per_label(threads=2)),
        },
        repeats=ctx.repeats(5),
        warmup=1,
        log=ctx.log,
    )
    startup = _job_startup_seconds(root, ctx.tmp / "startup-out", ctx.repeats(5))
    before_rate = n / rows[0].reference_median_s
    for row, threads in zip(rows, (1, 1, 2)):
        rate = n / row.candidate_median_s / threads
        hours = (IMAGENET_IMAGES / rate + IMAGENET_LABELS * startup) / NODE_CORES / 3600
        row.extra = {
            "images": n,
            "images_per_s_per_core": rate,
            "before_images_per_s_per_core": before_rate,
            "job_startup_s": startup,
            "projected_imagenet1k_hours_16_cores": hours,
            "before_projected_imagenet1k_hours_1_core": IMAGENET_IMAGES / before_rate / 3600,
        }
        row.note = (
            f"{rate:.0f} images/s per core (before: {before_rate:.0f}, one job, one core); "
            f"ImageNet-1k on {NODE_CORES} cores ≈ {hours * 60:.0f} min "
            f"(before: {IMAGENET_IMAGES / before_rate / 3600:.1f} h on one core); job start-up {startup:.1f} s"
        )
    return rows
