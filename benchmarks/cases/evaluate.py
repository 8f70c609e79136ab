"""Case f: evaluating one model's samples with the real statistics computed afresh vs already cached.

What a second evaluation (another model, or a rerun after new samples) saves by the per-label cache
of real statistics (`labelwise.metrics.realstats`, the pipeline's results/{dataset}/stats/{space}/
{label}.npz, written by rule real_stats).  Both sides make the same call the evaluate rule's script
makes, `labelwise.metrics.evaluate_model(model, samples, shards, stats_dir=..., classifier_path=...)`,
in the classifier feature space (always available offline; Inception is 'off' here):

- reference — *real stats computed afresh*: `stats_dir` is a new, empty directory each repeat, so
  every label's real images are read (checksum verified), passed through the classifier, their mean
  and covariance computed and the .npz written — what the first evaluation costs;
- candidate — *real stats cached*: `stats_dir` already holds those files, so they are loaded and
  checked against the shard and the classifier (`realstats.real_stats`) instead.

Both include opening the classifier (weights read and hashed), reading the samples and the shards,
the sample features and every metric (per-label FID, pooled FID, IS, label accuracy); neither
includes interpreter or torch start-up nor writing metrics.json.  1 torch thread and 1 BLAS
thread, as a pipeline job.  Real data: the mnist5k shards (500 images per label).  The
classifier is `train_classifier` on all ten labels for 1 epoch; the samples are 100 per label
(evaluation.samples_per_label) from an *untrained* wcgan generator of config.yaml's size, cropped
to 28 px as `labelwise.sample` does and written with `write_images`.  The time depends essentially
on the image counts and sizes, not on what the images show or on the weight values (the same
convolutions, the same 128-d covariances; only the FID's matrix square root can vary a little with
the matrices' values); the FIDs themselves mean nothing here.  Both sides' metrics are checked to
be identical.
"""

from __future__ import annotations

import itertools
import json
import logging

import torch
from harness import compare, timed

NAME = "evaluate"
DESCRIPTION = "evaluate_model for one model: real statistics computed afresh vs loaded from the stats cache"

SAMPLES_PER_LABEL = 100


def _fake_samples(ctx, labels) -> dict:
    """An untrained generator's samples per label, as uint8 HDF5 sample files."""
    from labelwise.images import read_images, write_images
    from labelwise.nets import Generator, network_resolution

    settings = ctx.config["models"]["wcgan"]
    real, _ = read_images(ctx.shard(labels[0]))
    c, h, w = real.shape[1:]
    r = network_resolution(max(h, w))
    torch.manual_seed(0)
    gen = Generator(int(settings["latent_dim"]), c, r, int(settings["width"])).eval()
    paths = {}
    for label in labels:
        with torch.no_grad():
            x = gen(torch.randn(SAMPLES_PER_LABEL, gen.latent_dim))
        top, left = (r - h) // 2, (r - w) // 2
        x = x[:, :, top : top + h, left : left + w]
        images = x.add(1.0).mul(127.5).round().clamp(0, 255).to(torch.uint8).numpy()
        paths[label] = ctx.tmp / "evaluate" / "samples" / f"{label}.h5"
        write_images(
            paths[label],
            images,
            label=label,
            class_name=str(label),
            source="generated",
            model="wcgan",
            resolution=r,
            channels=c,
        )
    return paths


def run(ctx) -> list:
    from threadpoolctl import threadpool_limits

    # Like a pipeline job with runtime.threads: 1 (labelwise.cli.snakemake_entry): one torch thread
    # and one BLAS thread (the FID's matrix square root and covariances go through numpy/scipy).
    torch.set_num_threads(1)
    with threadpool_limits(limits=1):
        return _run(ctx)


def _run(ctx) -> list:
    from labelwise.metrics import evaluate_model, train_classifier
    from labelwise.metrics.realstats import stats_path

    logging.getLogger("labelwise.metrics").setLevel(logging.WARNING)
    root = ctx.tmp / "evaluate"
    all_labels = list(range(10))
    shards = {k: ctx.shard(k) for k in all_labels}
    classifier = root / "classifier" / "classifier.pt"
    info = train_classifier(shards, classifier, epochs=1, seed=0, device="cpu")
    ctx.log(f"  [evaluate] classifier: 1 epoch, held-out accuracy {info['held_out_accuracy']:.3f}")
    samples = _fake_samples(ctx, all_labels)
    settings = {"inception": "off"}
    fresh_dirs = itertools.count()

    rows = []
    for labels in ([0], [0, 1]) if ctx.quick else ([0], all_labels):
        tag = f"{len(labels)} label{'s' if len(labels) > 1 else ''}"
        cached_dir = root / f"stats-cached-{len(labels)}"

        def evaluate(stats_dir):
            return evaluate_model(
                "wcgan",
                {k: samples[k] for k in labels},
                {k: shards[k] for k in labels},
                stats_dir=stats_dir,
                classifier_path=classifier,
                settings=settings,
                device="cpu",
            )

        # Fill the cache once, as rule real_stats (or the first evaluation) would.
        first = evaluate(cached_dir)
        assert all(stats_path(cached_dir, "classifier", k).is_file() for k in labels)
        results = {}

        def afresh():
            stats_dir = root / f"stats-fresh-{next(fresh_dirs)}"  # new and empty: nothing to reuse
            results["afresh"] = evaluate(stats_dir)

        def cached():
            results["cached"] = evaluate(cached_dir)

        rows += compare(
            f"f.evaluate/{tag}",
            ("real stats computed afresh", timed(afresh)),
            {"real stats cached": timed(cached)},
            repeats=ctx.repeats(7),
            warmup=0 if ctx.quick else 1,
            log=ctx.log,
        )
        same = (
            json.dumps(results["afresh"], sort_keys=True)
            == json.dumps(results["cached"], sort_keys=True)
            == json.dumps(first, sort_keys=True)
        )
        if not same:
            raise AssertionError(f"f.evaluate/{tag}: metrics differ between cached and freshly computed real stats")
        npz = sum(stats_path(cached_dir, "classifier", k).stat().st_size for k in labels)
        n_real = sum(first["protocol"]["n_real"].values())
        row = rows[-1]
        row.note = (
            f"classifier space, {n_real} real + {SAMPLES_PER_LABEL * len(labels)} generated images, "
            "1 thread (torch and BLAS); metrics identical"
        )
        row.extra = {
            "labels": labels,
            "n_real": n_real,
            "n_generated": SAMPLES_PER_LABEL * len(labels),
            "stats_npz_bytes": npz,
            "saved_s": row.reference_median_s - row.candidate_median_s,
            "classifier_held_out_accuracy": info["held_out_accuracy"],
            "metrics_identical": same,
        }
    return rows
