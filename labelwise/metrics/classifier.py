"""A small label classifier trained on the real shards: metrics that need no downloaded weights.

Inception weights may be unavailable offline, and Inception features say little about 28 px
digits.  A CNN trained here on the real training images of the selected labels gives label
accuracy (the share of label k's samples it assigns to k, the direct test of a per-label
generator) and a feature space (its penultimate layer) for FID, with softmax outputs for IS, by the
same torch-fidelity maths as Inception's.  It takes 1- or 3-channel images of any size (scaled to
[-1, 1], resized to 32×32 itself); its weights file is a plain dict that loads with
weights_only=True, with its held-out accuracy inside and beside it as JSON.  Caveat recorded in
metrics.json: the classifier-space real statistics come from the images it was trained on (all but
the held-out part).
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import time
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..data.shards import read_shard_file
from ..device import select_device
from ..errors import LabelwiseError
from ..io import save_torch, write_json

log = logging.getLogger("labelwise.metrics")

FORMAT = "labelwise-classifier/1"
INPUT_SIZE = 32
EXTRACTOR_NAME = "labelwise-cnn"


class LabelClassifier(nn.Module):
    """Three conv blocks (conv-BN-ReLU-maxpool, 32 -> 4 px) and a `feature_dim` ReLU layer."""

    def __init__(self, channels: int, n_classes: int, width: int = 16, feature_dim: int = 128):
        super().__init__()
        layers: list[nn.Module] = []
        c = channels
        for k in range(3):
            out = width * 2**k
            layers += [
                nn.Conv2d(c, out, 3, padding=1, bias=False),
                nn.BatchNorm2d(out),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(2),
            ]
            c = out
        layers += [nn.Flatten(), nn.Linear(c * (INPUT_SIZE // 8) ** 2, feature_dim), nn.ReLU(inplace=True)]
        self.body = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.Dropout(0.3), nn.Linear(feature_dim, n_classes))

    @staticmethod
    def prepare(images: torch.Tensor) -> torch.Tensor:
        """uint8 N×C×H×W -> float in [-1, 1] at 32×32 (antialiased when shrinking 64 px images)."""
        x = images.float().div(127.5).sub(1.0)
        if x.shape[-2:] != (INPUT_SIZE, INPUT_SIZE):
            x = F.interpolate(x, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=False, antialias=True)
        return x

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.body(x)
        return features, self.head(features)


def _read_labelled(shard_paths_by_label: Mapping[int, os.PathLike]):
    images, targets, names, channels = [], [], {}, set()
    for index, (label, path) in enumerate(sorted(shard_paths_by_label.items())):
        x, attrs = read_shard_file(path)  # trusted only through its dataset's meta.json
        if attrs.get("label", label) != label:
            raise LabelwiseError(
                f"{path}: holds label {attrs.get('label')} but was given as label {label}; pass each label's own shard"
            )
        if len(x) < 2:
            raise LabelwiseError(
                f"{path}: {len(x)} image(s) for label {label}; the classifier needs at least 2 "
                "per label (one to train on, one to hold out): add images to that class (or drop "
                "the label from data.labels) and rerun the data stage (`labelwise prepare`)"
            )
        channels.add(x.shape[1])
        images.append(x)
        targets.append(np.full(len(x), index, np.int64))
        names[label] = str(attrs.get("class_name", label))
    if len(channels) != 1:
        raise LabelwiseError(f"the shards mix channel counts {sorted(channels)}; they must come from one dataset")
    return images, targets, names, channels.pop()


def train_classifier(
    shard_paths_by_label: Mapping[int, os.PathLike],
    out_path: os.PathLike,
    *,
    epochs: int = 5,
    seed: int = 0,
    device: str | torch.device = "cpu",
    held_out_fraction: float = 0.1,
    batch_size: int = 64,
    lr: float = 1e-3,
    width: int = 16,
    feature_dim: int = 128,
) -> dict:
    """Train the label classifier on the real shards and write it to `out_path` (+ `.json` beside).

    Each label's images are split at random (seeded) into training and a held-out
    `held_out_fraction` (at least one image per label when the fraction is > 0); the held-out
    accuracy, overall and per label, is returned and saved.  Deterministic for a given seed on CPU.
    """
    if len(shard_paths_by_label) < 2:
        raise LabelwiseError(
            f"the label classifier needs at least 2 labels, got {sorted(shard_paths_by_label)}; "
            "select more labels or turn the classifier metrics off"
        )
    if not 0 <= held_out_fraction < 1:
        raise LabelwiseError(f"held_out_fraction must be in [0, 1), got {held_out_fraction}")
    dev = device if isinstance(device, torch.device) else select_device(device)
    started = time.perf_counter()
    images, targets, names, channels = _read_labelled(shard_paths_by_label)
    labels = sorted(int(k) for k in shard_paths_by_label)

    rng = np.random.default_rng(seed)
    train_x, train_y, held_x, held_y = [], [], [], []
    for x, y in zip(images, targets):
        order = rng.permutation(len(x))
        k = min(len(x) - 1, math.ceil(held_out_fraction * len(x))) if held_out_fraction > 0 else 0
        held_x.append(x[order[:k]]), held_y.append(y[order[:k]])
        train_x.append(x[order[k:]]), train_y.append(y[order[k:]])
    # Resized once up front: every epoch then works on 32 px float tensors.
    tx = LabelClassifier.prepare(torch.from_numpy(np.concatenate(train_x)))
    ty = torch.from_numpy(np.concatenate(train_y))

    torch.manual_seed(seed)
    net = LabelClassifier(channels, len(labels), width, feature_dim).to(dev)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    shuffle = torch.Generator().manual_seed(seed)
    net.train()
    for epoch in range(int(epochs)):
        order = torch.randperm(len(tx), generator=shuffle)
        total = 0.0
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            if len(idx) < 2:  # BatchNorm cannot train on a batch of one
                continue
            _, logits = net(tx[idx].to(dev))
            loss = F.cross_entropy(logits, ty[idx].to(dev))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        log.info("classifier epoch %d/%d: training loss %.4f", epoch + 1, epochs, total / max(1, len(tx)))
    net.eval()

    hx, hy = np.concatenate(held_x), np.concatenate(held_y)
    per_label, held_acc = {}, None
    if len(hx):
        pred = _predict_indices(net, hx, dev, 256)
        held_acc = float(np.mean(pred == hy))
        per_label = {str(label): float(np.mean(pred[hy == i] == i)) for i, label in enumerate(labels)}
    info = {
        "format": FORMAT,
        "labels": labels,
        "class_names": [names[k] for k in labels],
        "channels": int(channels),
        "width": int(width),
        "feature_dim": int(feature_dim),
        "input_size": INPUT_SIZE,
        "epochs": int(epochs),
        "seed": int(seed),
        "batch_size": int(batch_size),
        "lr": float(lr),
        "held_out_fraction": float(held_out_fraction),
        "n_train": int(len(tx)),
        "n_held_out": int(len(hx)),
        "held_out_accuracy": held_acc,
        "held_out_accuracy_per_label": per_label,
        "train_seconds": round(time.perf_counter() - started, 3),
    }
    state = {k: v.detach().cpu().clone() for k, v in net.state_dict().items()}
    save_torch({**info, "state_dict": state}, out_path)
    write_json(Path(out_path).with_suffix(".json"), info)
    log.info(
        "classifier: held-out accuracy %s on %d images, %.1f s -> %s",
        held_acc,
        len(hx),
        info["train_seconds"],
        out_path,
    )
    return info


@torch.no_grad()
def _run(net: LabelClassifier, images: np.ndarray, device, batch_size: int):
    feats, logits = [], []
    for start in range(0, len(images), batch_size):
        x = LabelClassifier.prepare(torch.from_numpy(np.ascontiguousarray(images[start : start + batch_size])))
        f, lg = net(x.to(device))
        feats.append(f.float().cpu()), logits.append(lg.float().cpu())
    if not feats:
        return np.zeros((0, net.head[-1].in_features), np.float32), np.zeros((0, net.head[-1].out_features), np.float32)
    return torch.cat(feats).numpy(), torch.cat(logits).numpy()


def _predict_indices(net, images, device, batch_size) -> np.ndarray:
    return _run(net, images, device, batch_size)[1].argmax(axis=1)


class ClassifierSpace:
    """A trained label classifier as a feature space ('pool' = penultimate features, 'logits')
    and as a labeller (`predict`, `label_accuracy`)."""

    name = "classifier"

    def __init__(self, path: os.PathLike, device: str | torch.device = "cpu", batch_size: int = 256):
        self.path = Path(path)
        self.device = device if isinstance(device, torch.device) else select_device(device)
        self.batch_size = int(batch_size)
        fix = "delete it and rerun the classifier training stage"
        if not self.path.is_file():
            raise LabelwiseError(f"{self.path}: classifier weights not found; rerun the classifier training stage")
        try:
            blob = torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception as exc:  # any failure to read means a bad file to the user
            raise LabelwiseError(f"{self.path}: unreadable classifier weights ({type(exc).__name__}); {fix}") from None
        if not isinstance(blob, dict) or blob.get("format") != FORMAT:
            raise LabelwiseError(f"{self.path}: not a {FORMAT} file; {fix}")
        try:
            net = LabelClassifier(blob["channels"], len(blob["labels"]), blob["width"], blob["feature_dim"])
            net.load_state_dict(blob["state_dict"])
        except (KeyError, RuntimeError, TypeError) as exc:
            raise LabelwiseError(f"{self.path}: classifier weights do not fit the network ({exc}); {fix}") from None
        self.net = net.to(self.device).eval()
        self.info = {k: v for k, v in blob.items() if k != "state_dict"}
        self.labels: list[int] = [int(k) for k in blob["labels"]]
        self.channels = int(blob["channels"])
        with open(self.path, "rb") as f:
            sha = hashlib.sha256(f.read()).hexdigest()
        self.identity = {
            "extractor": EXTRACTOR_NAME,
            "features": f"penultimate-{blob['feature_dim']}",
            "weights_sha256": sha,
        }

    @property
    def held_out_accuracy(self) -> float | None:
        return self.info.get("held_out_accuracy")

    def _check(self, images: np.ndarray):
        images = np.asarray(images)
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1] != self.channels:
            raise ValueError(f"expected uint8 N×{self.channels}×H×W images, got {images.dtype} {images.shape}")
        return images

    def features(self, images: np.ndarray) -> dict[str, np.ndarray]:
        pool, logits = _run(self.net, self._check(images), self.device, self.batch_size)
        return {"pool": pool, "logits": logits}

    def predict(self, images: np.ndarray) -> np.ndarray:
        """Predicted labels (the dataset's label numbers, not class indices)."""
        return np.asarray(self.labels)[_predict_indices(self.net, self._check(images), self.device, self.batch_size)]

    def label_accuracy(self, images: np.ndarray, label: int) -> float:
        """Share of `images` the classifier assigns to `label`."""
        if int(label) not in self.labels:
            raise LabelwiseError(
                f"{self.path}: the classifier knows labels {self.labels}, not {label}; retrain it on "
                "the selected labels (delete it and rerun)"
            )
        return float(np.mean(self.predict(images) == int(label))) if len(images) else float("nan")
