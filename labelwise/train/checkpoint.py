"""Training checkpoints: atomic writes, the last two kept, corrupt ones skipped, stale ones discarded.

A checkpoint is a plain dict of tensors and Python scalars, so it loads with
`torch.load(weights_only=True)` (no code runs from a data file).  It records a fingerprint of
everything that determines the training trajectory except the budget, so that a rerun with a
longer budget continues from it while a rerun with other settings (learning rate, seed, data)
starts afresh instead of resuming state that belongs to another configuration.
"""
from __future__ import annotations

import logging
import re
from pathlib import Path

import torch

from ..errors import LabelwiseError
from ..io import atomic_path

log = logging.getLogger("labelwise.train")
_NAME = re.compile(r"^ckpt-(\d{9})\.pt$")
KEEP = 2


def checkpoint_path(directory: Path, iteration: int) -> Path:
    return Path(directory) / f"ckpt-{iteration:09d}.pt"


def list_checkpoints(directory: Path) -> list[tuple[int, Path]]:
    """(iteration, path) of every checkpoint file in `directory`, newest first."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in directory.iterdir() if (m := _NAME.match(p.name))]
    return sorted(found, reverse=True)


def save_checkpoint(directory: Path, iteration: int, state: dict) -> Path:
    path = checkpoint_path(directory, iteration)
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
    for _, old in list_checkpoints(directory)[KEEP:]:
        old.unlink(missing_ok=True)
    return path


def load_resumable(directory: Path, fingerprint: str, max_iteration: int) -> dict | None:
    """The newest readable checkpoint of this configuration at or before `max_iteration`, or None.

    Unreadable (truncated, corrupt) checkpoints are skipped with a warning in favour of the
    previous one; if checkpoints exist but none can be read, that is an error, because silently
    starting over would throw away the work they hold.  Checkpoints of another configuration are
    deleted: Snakemake reran this job because its settings changed, and they cannot be resumed.
    """
    candidates = list_checkpoints(directory)
    unreadable = []
    for iteration, path in candidates:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
            if not isinstance(state, dict) or "fingerprint" not in state:
                raise ValueError("not a labelwise checkpoint")
        except Exception as exc:  # any failure to read means this file is unusable
            log.warning("checkpoint %s is unreadable (%s); trying the previous one", path, exc)
            unreadable.append(path)
            continue
        if state["fingerprint"] != fingerprint:
            log.info("discarding %d checkpoint(s) in %s written with other settings", len(candidates), directory)
            _delete(p for _, p in candidates)
            return None
        if iteration > max_iteration:
            continue  # the budget shrank below this checkpoint; an earlier one may still fit
        # Later checkpoints (beyond a shrunken budget) would outrank the new ones when pruning.
        _delete(p for i, p in candidates if i > iteration)
        return state
    if unreadable and len(unreadable) == len(candidates):
        raise LabelwiseError(
            f"every checkpoint in {directory} is unreadable ({', '.join(p.name for p in unreadable)}); "
            f"delete the directory to retrain this label from the start"
        )
    if candidates:
        log.info("no checkpoint in %s fits the budget of %d iterations; starting afresh", directory, max_iteration)
        _delete(p for _, p in candidates)
    return None


def _delete(paths) -> None:
    for path in paths:
        path.unlink(missing_ok=True)
