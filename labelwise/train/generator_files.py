"""The generator file format: what a training job leaves for sampling, the metrics and `labelwise
generate` — one generator file per job and one bundle of its generator snapshots — written by both
training loops and read back here (weights_only loading, so reading one runs no code from it)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from ..config import gan_maximum
from ..errors import LabelwiseError, brief_repr
from ..io import save_torch
from ..memory import require
from ..nets import RESOLUTIONS, ConditionalGenerator, Generator
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


def read_generator_file(path) -> dict:
    """The payload of a generator file, checked (`check_payload`) but not built into a network:
    weights_only loading runs no code from it, and whatever is wrong with it is one LabelwiseError."""
    path = Path(path)
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise LabelwiseError(f"{path}: generator not found; run the train stage for this label first") from None
    except OSError as exc:
        raise LabelwiseError(f"{path}: cannot read the generator file ({exc.strerror or exc})") from None
    require(size, f"{path}: loading the generator file", "free memory or run this on a node with more")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
        check_payload(payload)
        return payload
    except Exception as exc:  # torch.load raises a dozen types for a damaged or crafted file
        raise LabelwiseError(
            f"{path}: not a readable labelwise generator ({_brief(exc)}); delete it and rerun training"
        ) from None


def load_generator(path, device: torch.device | str = "cpu", label: int | None = None) -> tuple[nn.Module, dict]:
    """Rebuild a generator written by `train_label`; weights_only loading runs no code from the file.

    A conditional (cgan) generator needs `label` and comes back bound to it; info["label"] is set.
    """
    path = Path(path)
    payload = read_generator_file(path)
    try:
        return _generator_from_payload(payload, device, label, path)
    except LabelwiseError:
        raise
    except Exception as exc:
        raise LabelwiseError(
            f"{path}: not a readable labelwise generator ({_brief(exc)}); delete it and rerun training"
        ) from None


def _brief(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:300]}" if text else type(exc).__name__


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_payload(payload) -> None:
    """ValueError naming the first way `payload` departs from `generator_payload`'s layout, before any
    network is built: plain values of the right types, an architecture within the config schema's
    bounds, and weights whose names and shapes are exactly those of that architecture (so building it
    allocates no more than the file holds)."""
    if not isinstance(payload, dict):
        raise ValueError(f"holds a {type(payload).__name__}, not a generator")
    if payload.get("format") != GENERATOR_FORMAT:
        raise ValueError(f"format {brief_repr(payload.get('format'))}, expected {GENERATOR_FORMAT!r}")
    if not isinstance(payload.get("model"), str) or not _is_int(payload.get("iterations", 0)):
        raise ValueError("'model' is not a name or 'iterations' not an integer")
    if "labels" in payload:
        labels = payload["labels"]
        if not isinstance(labels, list) or not labels or not all(_is_int(k) and k >= 0 for k in labels):
            raise ValueError("'labels' is not a list of label numbers")
    elif not _is_int(payload.get("label")) or payload["label"] < 0:
        raise ValueError(f"'label' {brief_repr(payload.get('label'))} is not a label number")
    arch = payload.get("arch")
    if not isinstance(arch, dict):
        raise ValueError("no 'arch'")
    largest = {"latent_dim": gan_maximum("latent_dim"), "width": gan_maximum("width")}
    for key, high in largest.items():
        if not _is_int(arch.get(key)) or not 1 <= arch[key] <= high:
            raise ValueError(f"arch {key}={brief_repr(arch.get(key))}, expected 1..{high}")
    if arch.get("channels") not in (1, 3) or not _is_int(arch["channels"]):
        raise ValueError(f"arch channels={brief_repr(arch.get('channels'))}, expected 1 or 3")
    if arch.get("resolution") not in RESOLUTIONS or not _is_int(arch["resolution"]):
        raise ValueError(f"arch resolution={brief_repr(arch.get('resolution'))}, expected one of {RESOLUTIONS}")
    size = payload.get("image_size")
    if not (
        isinstance(size, list) and len(size) == 2 and all(_is_int(v) and 1 <= v <= arch["resolution"] for v in size)
    ):
        raise ValueError(f"image_size {brief_repr(size)} is not two sides of 1..{arch['resolution']} pixels")
    if payload.get("ema") is not None and not isinstance(payload["ema"], float):
        raise ValueError("'ema' is not a number")
    try:
        json.dumps([payload.get("training"), payload.get("ema")])
    except (TypeError, ValueError, RecursionError):
        raise ValueError("'training' is not a plain JSON record") from None
    state = payload.get("state_dict")
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError("'state_dict' is not a dict of tensors")
    with torch.device("meta"):  # shapes only: nothing is allocated
        probe = _network(arch, payload)
    want = {k: tuple(v.shape) for k, v in probe.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in state.items()}
    if want != got:
        wrong = sorted(set(want) ^ set(got)) or sorted(k for k in want if want[k] != got[k])
        raise ValueError(f"weights do not match the architecture {arch} (first: {wrong[0]})")


def _network(arch: dict, payload: dict) -> nn.Module:
    if "labels" in payload:
        return ConditionalGenerator(
            arch["latent_dim"], arch["channels"], arch["resolution"], arch["width"], len(payload["labels"])
        )
    return Generator(arch["latent_dim"], arch["channels"], arch["resolution"], arch["width"])


def _generator_from_payload(payload: dict, device, label: int | None, where) -> tuple[nn.Module, dict]:
    """The network of a generator payload (a generator file's, or one snapshot's), in eval mode."""
    check_payload(payload)
    net = _network(payload["arch"], payload)
    net.load_state_dict(payload["state_dict"])
    if "labels" in payload:
        if label is None or int(label) not in payload["labels"]:
            raise LabelwiseError(
                f"{where}: a conditional generator of labels {payload['labels']}; label {label} is not among them"
            )
        gen = ClassBoundGenerator(net, payload["labels"].index(int(label)))
        payload = {**payload, "label": int(label)}
    else:
        gen = net
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
