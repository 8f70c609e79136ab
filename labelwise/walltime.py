"""Scheduler wall times (minutes) of the sampling and evaluation jobs, from the number of images each
one pushes through a network and a deliberately low rate per network and device kind.

A cluster kills a job at its wall time (and the profiles then retry it from scratch), so the estimate
must cover the work on a slow device of its kind; asking for much more only queues the job longer.
Training's wall time comes from its own budget instead (rules/common.smk, `model_runtime_minutes`).
Torch-free: rules/common.smk calls it at parse time.
"""

from __future__ import annotations

import math

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
SAFETY = 1.5  # the estimate times this: rates vary with the site's GPU, image size and load

# Real training images per label, for sizing the statistics and classifier jobs at parse time (no
# file is read then): the sources' own counts; an image folder is taken as ImageNet-1k, whose
# largest class has 1,300 images.
REAL_IMAGES_PER_LABEL = {"mnist5k": 500, "cifar10": 5000, "cifar100": 500, "imagefolder": 1300}


def minutes(work: dict[str, float], on_gpu: bool) -> int:
    """Wall time for `work` (network -> images through it) on a GPU or on the CPU."""
    kind = "gpu" if on_gpu else "cpu"
    seconds = sum(images / RATES[network][kind] for network, images in work.items())
    return FIXED_MINUTES + math.ceil(SAFETY * seconds / 60)
