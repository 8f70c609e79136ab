"""The generator file format: what a training job leaves for sampling, the metrics and `labelwise
generate` — one generator file per job and one bundle of its generator snapshots — written by both
training loops and read back here (weights_only loading, so reading one runs no code from it)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from ..errors import LabelwiseError
from ..io import save_torch
from ..nets import ConditionalGenerator, Generator
from .checkpoint import snapshot_path

if TYPE_CHECKING:
    from .compute import Budget

log = logging.getLogger("labelwise.train")

GENERATOR_FORMAT = "labelwise-generator/1"
SNAPSHOTS_FORMAT = "labelwise-snapshots/1"


def generator_payload(
    gen: Generator,
    *,
    model,
    label,
    iterations,
    channels,
    resolution,
    image_size,
    settings,
    ema: float | None = None,
    training: dict | None = None,
) -> dict:
    """What a generator file holds (plain tensors and types: loads with weights_only=True).
    `label`: the label (per-label models) or the list of labels, in class-index order (cgan).
    `ema`: the decay when `gen` holds the weight average; `training`: `labelwise.training_record.training_record`."""
    return {
        "ema": None if ema is None else float(ema),
        **({"training": training} if training is not None else {}),
        "format": GENERATOR_FORMAT,
        "model": model,
        **({"labels": [int(k) for k in label]} if isinstance(label, list) else {"label": int(label)}),
        "iterations": int(iterations),
        "arch": {
            "latent_dim": int(settings["latent_dim"]),
            "channels": int(channels),
            "resolution": int(resolution),
            "width": int(settings["width"]),
        },
        "image_size": [int(image_size[0]), int(image_size[1])],
        "state_dict": {k: v.detach().cpu() for k, v in gen.state_dict().items()},
    }


def write_generator(path, gen: Generator, **info) -> None:
    """`info`: `generator_payload`'s keywords."""
    save_torch(generator_payload(gen, **info), path)


def write_snapshot_bundle(
    path, checkpoints, budget: Budget, fingerprint: str, last_iteration: int, *, model: str, who: str = ""
) -> list[dict]:
    """One file with every snapshot this run reached (a minutes budget may stop it before the later
    points): {"format", "model", "budget_iterations", "fractions", "snapshots": [generator payload +
    iteration, elapsed (training wall seconds), fraction], ...}, oldest first; loads with weights_only=True."""
    entries = []
    for iteration, fraction in budget.snapshot_points():
        if iteration > last_iteration:
            log.info(
                "[%s] snapshot at iteration %d (%g of the budget) not reached: training stopped at %d",
                who,
                iteration,
                fraction,
                last_iteration,
            )
            continue
        file = snapshot_path(checkpoints, iteration)
        try:
            entry = torch.load(file, map_location="cpu", weights_only=True)
        except FileNotFoundError:
            raise LabelwiseError(
                f"[{who}] generator snapshot {file} is missing; delete {checkpoints} and rerun "
                "to retrain from the start"
            ) from None
        if entry.get("fingerprint") != fingerprint:
            raise LabelwiseError(f"[{who}] {file} was taken with other settings; delete {checkpoints} and rerun")
        entries.append(entry)
    bundle = {
        "format": SNAPSHOTS_FORMAT,
        "model": model,
        "budget_iterations": int(budget.iterations),
        "fractions": list(budget.snapshots),
        "snapshots": entries,
    }
    save_torch(bundle, path)
    log.info("[%s] %d generator snapshot(s) -> %s", who, len(entries), path)
    return entries


class ClassBoundGenerator(nn.Module):
    """A conditional generator fixed to one class: called like a per-label generator, gen(z)."""

    def __init__(self, gen: ConditionalGenerator, class_index: int):
        super().__init__()
        self.gen, self.class_index, self.latent_dim = gen, class_index, gen.latent_dim

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.gen(z, torch.full((z.shape[0],), self.class_index, dtype=torch.long, device=z.device))


def load_generator(path, device: torch.device | str = "cpu", label: int | None = None) -> tuple[nn.Module, dict]:
    """Rebuild a generator written by `train_label`; weights_only loading runs no code from the file.

    A conditional (cgan) generator needs `label` and comes back bound to it; info["label"] is set.
    """
    path = Path(path)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
        return _generator_from_payload(payload, device, label, path)
    except LabelwiseError:
        raise
    except FileNotFoundError:
        raise LabelwiseError(f"{path}: generator not found; run the train stage for this label first") from None
    except Exception as exc:
        raise LabelwiseError(
            f"{path}: not a readable labelwise generator ({exc}); delete it and rerun training"
        ) from None


def _generator_from_payload(payload: dict, device, label: int | None, where) -> tuple[nn.Module, dict]:
    """The network of a generator payload (a generator file's, or one snapshot's), in eval mode."""
    if payload.get("format") != GENERATOR_FORMAT:
        raise ValueError(f"format {payload.get('format')!r}")
    arch = payload["arch"]
    if "labels" in payload:
        cgen = ConditionalGenerator(
            arch["latent_dim"], arch["channels"], arch["resolution"], arch["width"], len(payload["labels"])
        )
        cgen.load_state_dict(payload["state_dict"])
        if label is None or int(label) not in payload["labels"]:
            raise LabelwiseError(
                f"{where}: a conditional generator of labels {payload['labels']}; label {label} is not among them"
            )
        gen = ClassBoundGenerator(cgen, payload["labels"].index(int(label)))
        payload = {**payload, "label": int(label)}
    else:
        gen = Generator(arch["latent_dim"], arch["channels"], arch["resolution"], arch["width"])
        gen.load_state_dict(payload["state_dict"])
    return gen.to(device).eval(), payload


def load_snapshots(path) -> list[dict]:
    """The snapshot payloads of a bundle written by `write_snapshot_bundle` (weights_only loading;
    memory-mapped, so that only the tensors of the snapshots used are read)."""
    path = Path(path)
    try:
        bundle = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        if bundle.get("format") != SNAPSHOTS_FORMAT:
            raise ValueError(f"format {bundle.get('format')!r}")
        return list(bundle["snapshots"])
    except FileNotFoundError:
        raise LabelwiseError(f"{path}: snapshot bundle not found; run the train stage with budget.snapshots") from None
    except Exception as exc:
        raise LabelwiseError(
            f"{path}: not a readable labelwise snapshot bundle ({exc}); delete it and rerun training"
        ) from None


def snapshot_generator(
    snapshot: dict, device: torch.device | str = "cpu", label: int | None = None, where="snapshot"
) -> tuple[nn.Module, dict]:
    """A generator rebuilt from one entry of `load_snapshots`, like `load_generator` (a conditional one
    bound to `label`); info also holds the snapshot's iteration and elapsed training seconds."""
    try:
        return _generator_from_payload(snapshot, device, label, where)
    except LabelwiseError:
        raise
    except Exception as exc:
        raise LabelwiseError(
            f"{where}: not a readable generator snapshot ({exc}); delete the bundle and rerun training"
        ) from None
