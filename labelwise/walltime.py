"""Scheduler wall times (minutes) of the pipeline's jobs, from the work each one does and a
deliberately low rate per kind of work and device.

Sampling and evaluation: the images each job pushes through a network.  Training, when
budget.minutes does not cap it: the counted GFLOP of its budget (labelwise.train.compute counts them;
here they are estimated without torch from the model's size) at an assumed GFLOP/s.  Preparing an
image folder's label: its JPEGs at an assumed decoding rate.

A cluster kills a job at its wall time (and the profiles then retry it), so the estimate must cover
the work on a slow device of its kind; asking for much more only queues the job longer.
Torch-free: rules/common.smk calls it at parse time.
"""

from __future__ import annotations

import math

from .plan import network_resolution

# Images per second assumed, per network and device kind: below what was measured or expected, so
# that the wall time covers the job.  CPU: measured on the project's 2-core machine with 1 thread
# (docs/benchmarks.md: Inception ~2.4-2.7 images/s, case e; the classifier and the generators are
# far faster).  GPU: expectations for one V100/A100/H200-class GPU, NOT measurements (no GPU here;
# docs/clusters.md "Evaluation on GPUs" gives the expected rates these are a fraction of).
RATES = {
    "generator": {"gpu": 2000.0, "cpu": 50.0},
    "classifier": {"gpu": 2000.0, "cpu": 200.0},
    "inception": {"gpu": 100.0, "cpu": 1.0},
}
# Start-up of every job (imports, reading shards and weights, a CUDA context, a slow shared file system).
FIXED_MINUTES = 10
# ... of one per-label job (sample, real_stats, prepare_label): small and many, bundled into groups on a
# cluster whose wall time is the sum of their members' (profiles/slurm); a retry gets `attempt` times it.
PER_LABEL_FIXED_MINUTES = 2
SAFETY = 1.5  # the estimate times this: rates vary with the site's GPU, image size and load

# Training without a minutes cap: counted GFLOP per second of one training job, per device kind (CPU: per
# thread).  GPU: a fifth of issue 11's one-label H200 rates at CIFAR-10 size (W-CGAN 30.8 label-it/s x
# 156.8 GFLOP = 4,830 GFLOP/s; DC-CGAN 155 x 42.1 = 6,530), for a V100-class or busy GPU; packed jobs
# reach several times more (docs/benchmarks.md), so they are over-estimated.  CPU: the default config
# trains W-CGAN's 300 x 10.0 GFLOP in 1-3 minutes on one thread of the project's machine (17-50 GFLOP/s).
TRAIN_GFLOP_PER_S = {"gpu": 1000.0, "cpu": 10.0}
# GFLOP per label-iteration at a reference size, per loss (docs/benchmarks.md: label_iteration_flops at
# CIFAR-10 size, 3 x 32 x 32, width 64) with the batch and critic steps counted there; other sizes scale
# as the networks do (`train_gflop_per_iteration`).
REFERENCE_ITERATION = {
    "wgan-gp": {"gflop": 156.8, "batch_size": 64, "critic_steps": 5},
    "bce": {"gflop": 42.1, "batch_size": 100, "critic_steps": 1},
}
REFERENCE_WIDTH, REFERENCE_RESOLUTION = 64, 32

# JPEG decoding of an image folder (prepare_label), images per second on one thread: below the 105-323
# images/s per core measured at 500 x 375 px (docs/benchmarks.md, case i).
DECODE_IMAGES_PER_S = 50.0

# Real training images per label, for sizing the statistics and classifier jobs at parse time (no
# file is read then): the sources' own counts; an image folder is taken as ImageNet-1k, whose
# largest class has 1,300 images.
REAL_IMAGES_PER_LABEL = {"mnist5k": 500, "cifar10": 5000, "cifar100": 500, "imagefolder": 1300}


# Image sides of the sources, for sizing at parse time (an image folder's is data.resolution).
IMAGE_SIZE = {"mnist5k": 28, "cifar10": 32, "cifar100": 32}


def minutes(work: dict[str, float], on_gpu: bool, fixed: float = FIXED_MINUTES) -> int:
    """Wall time for `work` (network -> images through it) on a GPU or on the CPU."""
    kind = "gpu" if on_gpu else "cpu"
    seconds = sum(images / RATES[network][kind] for network, images in work.items())
    return int(math.ceil(fixed + SAFETY * seconds / 60))


def train_gflop_per_iteration(loss: str, settings: dict, image_size: int) -> float:
    """Estimated counted GFLOP of one training iteration of one label.  The networks' convolutions cost
    about the same at every resolution step (channels double as the side halves), so the count goes
    with width², resolution², the number of steps, the batch and the optimisation steps per iteration
    (critic steps + the generator's)."""
    ref = REFERENCE_ITERATION[loss]
    resolution = network_resolution(image_size)
    steps = math.log2(resolution / 4) / math.log2(REFERENCE_RESOLUTION / 4)
    return (
        ref["gflop"]
        * (int(settings["width"]) / REFERENCE_WIDTH) ** 2
        * (resolution / REFERENCE_RESOLUTION) ** 2
        * steps
        * int(settings["batch_size"])
        / ref["batch_size"]
        * (int(settings["critic_steps"]) + 1)
        / (ref["critic_steps"] + 1)
    )


def train_minutes(
    loss: str, settings: dict, budget: dict, image_size: int, labels: int, on_gpu: bool, threads: int = 1
) -> int:
    """Wall time of a training job of `labels` members (per-label models packed; the conditional model:
    1, with its summed budget) when its budget has no minutes cap: the counted GFLOP its budget allows
    (iterations x the estimate, at most budget.gflop) at TRAIN_GFLOP_PER_S."""
    gflop = int(budget["iterations"]) * train_gflop_per_iteration(loss, settings, image_size)
    if budget.get("gflop"):
        gflop = min(gflop, float(budget["gflop"]))
    rate = TRAIN_GFLOP_PER_S["gpu"] if on_gpu else TRAIN_GFLOP_PER_S["cpu"] * max(1, int(threads))
    return int(math.ceil(FIXED_MINUTES + SAFETY * gflop * labels / rate / 60))


def prepare_label_minutes(images: int, threads: int) -> int:
    """Wall time of one image-folder label's preparation (JPEG decoding on `threads` threads)."""
    seconds = images / (DECODE_IMAGES_PER_S * max(1, int(threads)))
    return int(math.ceil(PER_LABEL_FIXED_MINUTES + SAFETY * seconds / 60))
