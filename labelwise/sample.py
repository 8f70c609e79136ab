"""Draw images from a trained per-label generator and store them like a shard (uint8 HDF5).

Samples are cropped back to the dataset's native size (MNIST's 28x28 from the 32x32 network),
so real and generated images are compared at the same size by the metrics.
"""

from __future__ import annotations

import json
import logging

import numpy as np
import torch

from .device import select_device, set_threads
from .images import write_images
from .memory import require
from .nets import generation_bytes
from .seeds import SAMPLE_STREAM, stream_seed
from .train.generator_files import load_generator

log = logging.getLogger("labelwise.sample")


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """[-1, 1] floats -> uint8 pixels, rounding to nearest."""
    return x.add(1.0).mul(127.5).round().clamp(0, 255).to(torch.uint8).cpu().numpy()


@torch.no_grad()
def generate(gen, n: int, seed: int, device, image_size=None, batch_size: int = 256) -> np.ndarray:
    rng = torch.Generator(device=device).manual_seed(seed)
    out = []
    for start in range(0, n, batch_size):
        z = torch.randn(min(batch_size, n - start), gen.latent_dim, device=device, generator=rng)
        x = gen(z)
        if image_size is not None:
            h, w = image_size
            top, left = (x.shape[2] - h) // 2, (x.shape[3] - w) // 2
            x = x[:, :, top : top + h, left : left + w]
        out.append(to_uint8(x))
    return np.concatenate(out) if out else np.zeros((0, gen.net[-2].out_channels, *(image_size or (0, 0))), np.uint8)


def draw(gen, info: dict, n: int, seed: int, device, batch_size: int = 256) -> np.ndarray:
    """`n` images of info["label"] at the dataset's size, from the label's own noise stream (derived
    from the global `seed`): the same noise for the final generator and for each of its snapshots.
    Refused in one line first when they cannot fit in memory (`labelwise.memory`)."""
    arch, (h, w) = info["arch"], info["image_size"]
    batch = min(batch_size, n)
    needed = 2 * n * arch["channels"] * h * w  # the batches' images, then their concatenation
    if torch.device(device).type == "cpu":  # the generator's passes run in this memory too
        needed += generation_bytes(arch["latent_dim"], arch["channels"], arch["resolution"], arch["width"], batch)
    require(
        needed,
        f"drawing {n} images of label {info['label']} ({arch['channels']}×{h}×{w}) in batches of {batch}",
        "draw fewer (evaluation.samples_per_label; generate -n) or in smaller batches (evaluation.batch_size; "
        "generate --batch-size), or run on a node with more memory",
    )
    return generate(
        gen, n, stream_seed(seed, info["label"], SAMPLE_STREAM), device, tuple(info["image_size"]), batch_size
    )


def sample_label(
    generator_path,
    out_path,
    n: int,
    seed: int,
    *,
    label: int | None = None,
    class_name: str | None = None,
    device: str = "auto",
    threads: int | None = None,
    batch_size: int = 256,
) -> None:
    """Draw `n` images of `label` (needed for a conditional generator; per-label ones know theirs)."""
    set_threads(threads)
    dev = select_device(device)
    gen, info = load_generator(generator_path, dev, label=label)
    label = info["label"]
    images = draw(gen, info, n, seed, dev, batch_size)
    write_images(
        out_path,
        images,
        label=label,
        class_name=class_name,
        source="generated",
        model=info["model"],
        resolution=int(info["image_size"][0]),
        channels=images.shape[1],
        iterations=info["iterations"],
        # Which generator was sampled (the weight average?) and what its training got: metrics.json's "training".
        ema=json.dumps(info.get("ema")),
        training=json.dumps(info.get("training")),
    )
    log.info("[%s label %d] wrote %d samples to %s", info["model"], label, n, out_path)
