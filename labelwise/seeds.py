"""Seeds: every random stream of a run derived from the one global `seed` and a label.

Each label gets its own seed (`label_seed`), and from it its own streams, so that labels never share
random numbers whether they train in separate jobs, packed into one job, or are sampled later:
the networks' initial weights (the label's seed itself), batch indices (`CPU_STREAM`, drawn on the
CPU), noise, gradient-penalty mixing and augmentation (`DEVICE_STREAM`, drawn on the training
device) and the noise of sampling and evaluation (`SAMPLE_STREAM`).  The conditional model's one
network takes the seed of `CONDITIONAL_SEED_LABEL`, a value no label index takes.

Torch-free (numpy only): sampling, evaluation and the command line import it without training.
"""

from __future__ import annotations

import numpy as np

# The conditional model's seed slot: derived like a label's, from a value no label index takes.
CONDITIONAL_SEED_LABEL = 2**31 - 1

# Offsets added to a label's seed, one per stream.
CPU_STREAM = 1  # batch indices (and the conditional model's classes), on the CPU
DEVICE_STREAM = 2  # noise, gradient-penalty mixing, DiffAugment, on the training device
SAMPLE_STREAM = 3  # the noise of sampling and evaluation


def label_seed(seed: int, label: int) -> int:
    """Independent, reproducible seed for each label derived from the one global seed."""
    return int(np.random.SeedSequence([int(seed), int(label)]).generate_state(1)[0])


def stream_seed(seed: int, label: int, stream: int) -> int:
    """The seed of one of a label's streams (`CPU_STREAM`, `DEVICE_STREAM`, `SAMPLE_STREAM`)."""
    return label_seed(seed, label) + stream
