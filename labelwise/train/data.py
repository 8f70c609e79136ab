"""What a training job trains on: its shards, checked and read into one pool of images on the device.

A job's members are K labels of a per-label model (one shard each) or the conditional model (every
selected label's shard, each image with its class index).  Either way the images end up in one
tensor, `JobData.pool`, member k's rows after member k-1's, so that one `index_select` gathers every
member's batch (`labelwise.train.engine.TrainingIteration`).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..data.shards import read_shard_file
from ..errors import LabelwiseError
from ..images import open_images
from ..memory import require
from ..nets import network_resolution, training_bytes


def images_to_tensor(images: np.ndarray, resolution: int) -> torch.Tensor:
    """uint8 N×C×H×W -> float in [-1, 1], padded with background (-1) to the network resolution."""
    x = torch.from_numpy(images).float().div_(127.5).sub_(1.0)
    pad_h, pad_w = resolution - x.shape[2], resolution - x.shape[3]
    if pad_h or pad_w:
        x = nn.functional.pad(x, (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2), value=-1.0)
    return x


def read_label_shard(shard: str | Path, label: int | None) -> tuple[np.ndarray, dict, int]:
    """A shard's images, attributes and label, checked to hold `label` (if given) and not to be empty,
    and against its dataset's meta.json when it sits in a prepared dataset (`read_shard_file`)."""
    images, attrs = read_shard_file(shard)
    if label is None:
        label = int(attrs["label"])
    elif int(attrs["label"]) != int(label):
        raise LabelwiseError(
            f"{shard}: holds label {attrs['label']} but label {label} was asked for; re-create the shards"
        )
    if len(images) == 0:
        raise LabelwiseError(f"{shard}: label {label} has no images; choose other data.labels or fix the dataset")
    return images, attrs, int(label)


@dataclass
class JobData:
    """A job's images on the device and what identifies them."""

    pool: torch.Tensor  # (N_total, C, R, R) in [-1, 1], padded to the network resolution R
    counts: list[int]  # images per member, in pool order
    classes: torch.Tensor | None  # the conditional model: each pool row's class index; else None
    labels: list[int]  # the dataset labels: one per member, or the conditional model's classes in order
    checksums: list[str]  # per member: its shard's SHA-256 (the conditional model: one over its shards')
    shape: tuple[int, int, int]  # the images' C, H, W before padding
    resolution: int


def read_job_data(shards: list, labels: list | None, conditional: bool, device) -> JobData:
    """The shards of a job (per-label model: one per member, `labels` checked against them; the
    conditional model: all of its classes), read into one pool on `device`."""
    parts, read_labels, sums = [], [], []
    for i, shard in enumerate(shards):
        images, attrs, label = read_label_shard(shard, None if labels is None else labels[i])
        if parts and images.shape[1:] != parts[0].shape[1:]:
            what = "re-create the shards" if conditional else "pack labels of one dataset"
            raise LabelwiseError(
                f"{shard}: images of shape {images.shape[1:]} next to {parts[0].shape[1:]} in one job; {what}"
            )
        parts.append(images)
        read_labels.append(label)
        sums.append(str(attrs.get("sha256")))
    if len(set(read_labels)) != len(read_labels):
        raise LabelwiseError(f"labels {read_labels}: a label is listed twice in one job; give each label once")
    shape = tuple(parts[0].shape[1:])
    resolution = network_resolution(max(shape[1], shape[2]))
    counts = [len(p) for p in parts]
    pool = images_to_tensor(np.concatenate(parts), resolution).to(device)
    if conditional:
        classes = torch.from_numpy(np.repeat(np.arange(len(parts), dtype=np.int64), counts)).to(device)
        return JobData(
            pool,
            [len(pool)],
            classes,
            read_labels,
            [hashlib.sha256("".join(sums).encode()).hexdigest()],
            shape,
            resolution,
        )
    return JobData(pool, counts, None, read_labels, sums, shape, resolution)


def check_job_memory(model: str, settings: dict, shards: list, device: torch.device, conditional: bool) -> None:
    """A CPU training job that cannot fit, refused in one line before anything is read or built: the
    shards' images (their headers give the sizes) and `nets.training_bytes`, a lower bound of one step."""
    if device.type != "cpu":
        return  # a GPU's memory is the device's: torch reports an overflow there itself
    data, shapes = 0, []
    for shard in shards:
        with open_images(shard) as f:
            n, c, h, w = f.shape
        resolution = network_resolution(max(h, w))
        data += 4 * n * c * resolution * resolution  # the images as floats, on the device
        shapes.append((c, resolution))
    c, resolution = shapes[0]
    step = training_bytes(
        settings["latent_dim"],
        c,
        resolution,
        settings["width"],
        settings["batch_size"],
        num_classes=len(shards) if conditional else 0,
    )
    labels = 1 if conditional else len(shards)
    require(
        data + labels * step,
        f"training {model} on {len(shards)} label(s) at {resolution} px, width {settings['width']}, batch "
        f"{settings['batch_size']}",
        f"lower models.{model}.batch_size or width (or runtime.labels_per_job), or run on a node with more memory",
    )
