"""Shared fixtures: tiny shards and tiny training settings that run in seconds on a CPU."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

from labelwise.images import write_images

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("LABELWISE_SHARED_DATA", REPO.parent / "shared" / "data"))

TINY_MODEL = {"width": 4, "latent_dim": 8, "batch_size": 8, "lr": 1e-3, "betas": [0.5, 0.9], "critic_steps": 2, "gp_lambda": 10.0}


@pytest.fixture
def tiny_settings():
    return dict(TINY_MODEL)


@pytest.fixture
def make_shard(tmp_path):
    """Write a shard of random 'digit-like' images for `label` and return its path."""

    def make(label: int = 0, n: int = 24, size: int = 28, channels: int = 1, seed: int = 0) -> Path:
        rng = np.random.default_rng(seed + label)
        images = rng.integers(0, 256, (n, channels, size, size), dtype=np.uint8)
        path = tmp_path / "shards" / f"{label}.h5"
        write_images(path, images, label=label, class_name=str(label), source="test", resolution=size, channels=channels)
        return path

    return make


@pytest.fixture
def python():
    return sys.executable
