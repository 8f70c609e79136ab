"""Training checkpoints: atomic writes, the last two kept, corrupt ones skipped, stale ones discarded.

A checkpoint is a plain dict of tensors and Python scalars, so it loads with
`torch.load(weights_only=True)` (no code runs from a data file).  It records a fingerprint of
everything that determines the training trajectory except the budget, so that a rerun with a
longer budget continues from it while a rerun with other settings (learning rate, seed, data)
starts afresh.  Generator snapshots (budget.snapshots) live beside the checkpoints, in
`snapshots/`: a resume keeps them, and every fresh start (`load_resumable` returning None) deletes
them with the checkpoints.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import torch

from ..errors import LabelwiseError
from ..io import save_torch, write_failure

log = logging.getLogger("labelwise.train")
_NAME = re.compile(r"^ckpt-(\d{9})\.pt$")
_SNAPSHOT_NAME = re.compile(r"^snap-(\d{9})\.pt$")
# What atomic_path leaves behind when a process is killed mid-write: `.ckpt-<iteration>.tmp-<pid>.pt`.
_TEMP_NAME = re.compile(r"^\.(ckpt|snap)-\d{9}\.tmp-(\d+)\.pt$")
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


def nonfinite_tensors(state_dicts: dict[str, dict]) -> list[str]:
    """'<network>.<tensor>' of every floating-point tensor holding a NaN or Inf, e.g. in
    {"generator": gen.state_dict(), "critic": critic.state_dict()}."""
    names, flags = [], []
    for network, sd in state_dicts.items():
        for key, value in sd.items():
            if isinstance(value, torch.Tensor) and value.is_floating_point():
                names.append(f"{network}.{key}")
                flags.append(torch.isfinite(value).all())
    if not flags:
        return []
    ok = torch.stack(flags).cpu().tolist()  # one device synchronisation for all tensors
    return [n for n, good in zip(names, ok) if not good]


def save_checkpoint(directory: Path, iteration: int, state: dict) -> Path:
    """Write `state` atomically as the checkpoint of `iteration`, then prune to the last KEEP.

    Refuses (LabelwiseError) to write weights holding NaN/Inf, so that a rerun never resumes a
    diverged state; a failed write (disk full) is a LabelwiseError too.  Either way the previous
    checkpoints are left as they were.
    """
    path = checkpoint_path(directory, iteration)
    previous = list_checkpoints(directory)
    kept, resume = (
        (f"the last good checkpoint {previous[0][1]} is kept", "a rerun resumes from it")
        if previous
        else ("no earlier checkpoint exists", "a rerun starts this label from the beginning")
    )
    bad = nonfinite_tensors({k: state[k] for k in ("generator", "critic") if isinstance(state.get(k), dict)})
    if bad:
        raise LabelwiseError(
            f"training diverged: non-finite weights at iteration {iteration} ({', '.join(bad[:3])}"
            f"{f' and {len(bad) - 3} more' if len(bad) > 3 else ''}); checkpoint {path.name} not written and {kept}. "
            "Lower the model's lr or change the seed, then rerun"
        )
    try:
        save_torch(state, path)
    except (OSError, LabelwiseError) as exc:  # a failed write (disk full) reaches no checkpoint's name
        why = write_failure(path, exc) if isinstance(exc, OSError) else str(exc)
        raise LabelwiseError(f"checkpoint at iteration {iteration} not saved: {why}; {kept} and {resume}") from None
    for _, old in list_checkpoints(directory)[KEEP:]:
        old.unlink(missing_ok=True)
    return path


def snapshot_path(directory: Path, iteration: int) -> Path:
    """Where the generator snapshot taken at `iteration` lives, inside a checkpoint directory."""
    return Path(directory) / "snapshots" / f"snap-{iteration:09d}.pt"


def list_snapshots(directory: Path) -> list[tuple[int, Path]]:
    """(iteration, path) of every snapshot in the checkpoint directory `directory`, oldest first."""
    folder = Path(directory) / "snapshots"
    if not folder.is_dir():
        return []
    return sorted((int(m.group(1)), p) for p in folder.iterdir() if (m := _SNAPSHOT_NAME.match(p.name)))


def save_snapshot(directory: Path, iteration: int, payload: dict) -> Path:
    path = snapshot_path(directory, iteration)
    save_torch(payload, path)
    return path


def delete_snapshots(directory: Path) -> None:
    found = list_snapshots(directory)
    if found:
        log.info("discarding %d generator snapshot(s) in %s", len(found), Path(directory) / "snapshots")
    _delete(p for _, p in found)


def delete_checkpoints(directory: Path) -> None:
    """Every checkpoint and snapshot in `directory`: what a fresh start of the job leaves behind it."""
    _delete(p for _, p in list_checkpoints(directory))
    delete_snapshots(directory)


def load_resumable(directory: Path, fingerprint: str, max_iteration: int) -> dict | None:
    """The newest readable checkpoint of this configuration at or before `max_iteration`, or None.

    Unreadable (truncated, corrupt) checkpoints are skipped with a warning in favour of the
    previous one; if checkpoints exist but none can be read, that is an error, because silently
    starting over would throw away the work they hold.  Checkpoints of another configuration are
    deleted: Snakemake reran this job because its settings changed, and they cannot be resumed.
    """
    _remove_stale_temporaries(directory)
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
            delete_snapshots(directory)
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
    delete_snapshots(directory)  # a fresh start: snapshots of an earlier run would mix two trajectories
    return None


def _remove_stale_temporaries(directory: Path) -> None:
    """Delete the half-written temporaries of killed runs (one label's directory has one writer, this
    process: it holds the folder's lock, labelwise.train.writers)."""
    for folder in (Path(directory), Path(directory) / "snapshots"):
        if folder.is_dir():
            stale = [p for p in folder.iterdir() if (m := _TEMP_NAME.match(p.name)) and int(m.group(2)) != os.getpid()]
            if stale:
                log.info("removing %d temporary file(s) left in %s by a killed run", len(stale), folder)
            _delete(stale)


def _delete(paths) -> None:
    for path in paths:
        path.unlink(missing_ok=True)
