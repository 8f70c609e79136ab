"""Training checkpoints: what one holds, atomic writes, the last two kept, corrupt ones skipped,
stale ones discarded, foreign formats refused.

A checkpoint is one member's (a label's, or the conditional model's) resumable state, a plain dict of
tensors and Python scalars (`JobState.member_state`), so it loads with `torch.load(weights_only=True)`
(no code runs from a data file).  A job writes one per member at the same iterations and restores
them together (`JobState`).  It records a fingerprint of everything that determines the training
trajectory except the budget, so that a rerun with a longer budget continues from it while a rerun
with other settings (learning rate, seed, data) starts afresh.  Generator snapshots (budget.snapshots)
live beside the checkpoints, in `snapshots/`: a resume keeps them, and every fresh start
(`load_resumable` returning None) deletes them with the checkpoints.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import torch

from ..errors import LabelwiseError
from ..io import save_torch, write_failure
from ..trainlog import LOG_COLUMNS
from .networks import pack_optimizer_states, pack_state_dicts, unpack_optimizer_state

log = logging.getLogger("labelwise.train")
_NAME = re.compile(r"^ckpt-(\d{9})\.pt$")
_SNAPSHOT_NAME = re.compile(r"^snap-(\d{9})\.pt$")
# What atomic_path leaves behind when a process is killed mid-write: `.ckpt-<iteration>.tmp-<pid>.pt`.
_TEMP_NAME = re.compile(r"^\.(ckpt|snap)-\d{9}\.tmp-(\d+)\.pt$")
KEEP = 2
# The checkpoint format: 2 adds "pending", the diagnostics of the iterations since the last log row, so
# that a job stopped by a signal between log points resumes to the same log.  Format 1 (before) is
# read as having none pending: its writers logged a row at every checkpoint.
CHECKPOINT_FORMAT = 2
READABLE_FORMATS = (1, 2)
DIAGNOSTICS = len(LOG_COLUMNS) - 2  # d_loss, g_loss, gradient penalty, Wasserstein estimate


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
        if state.get("format") not in READABLE_FORMATS:
            raise LabelwiseError(
                f"{path}: a checkpoint of format {state.get('format')!r}, which this labelwise does not read "
                f"(it reads formats {', '.join(map(str, READABLE_FORMATS))}); resume it with the labelwise that "
                f"wrote it, or delete {directory} to train this label from the start"
            )
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


class JobState:
    """A training job's resumable state, saved per member and restored for all members together.

    The job's modules hold every member's weights packed (`labelwise.train.networks`); each member's
    checkpoint holds its own part — generator, critic, both optimizers, the generator average when
    EMA is on — with its random streams, elapsed training time, log rows and pending diagnostics.
    `members`: objects with `fingerprint`, `elapsed`, `rows`, `checkpoints` (their folder); `rngs`: the
    members' (CPU, device) generators, read at every save (the list the training iteration draws from).
    """

    def __init__(self, networks, opt_g, opt_d, ema, rngs: list, members: list):
        self.networks, self.opt_g, self.opt_d, self.ema = networks, opt_g, opt_d, ema
        self.rngs, self.members = rngs, members
        self.pending: list[torch.Tensor] = []  # per-iteration (4, K) diagnostics since the last log row

    def member_states(self, iteration: int) -> list[dict]:
        """Each member's checkpoint at `iteration`."""
        nets, k = self.networks, self.networks.k
        gen, critic = nets.member_states(nets.gen.state_dict()), nets.member_states(nets.critic.state_dict())
        opt_g = unpack_optimizer_state(self.opt_g.state_dict(), k)
        opt_d = unpack_optimizer_state(self.opt_d.state_dict(), k)
        ema = nets.member_states(self.ema.state_dict()) if self.ema is not None else None
        pending = (
            torch.stack(self.pending).float().cpu()
            if self.pending
            else torch.zeros(0, DIAGNOSTICS, k, dtype=torch.float32)
        )
        states = []
        for j, member in enumerate(self.members):
            rng_cpu, rng_dev = self.rngs[j]
            states.append(
                {
                    **({"generator_ema": ema[j]} if ema is not None else {}),
                    "format": CHECKPOINT_FORMAT,
                    "fingerprint": member.fingerprint,
                    "iteration": iteration,
                    "elapsed": member.elapsed,
                    "generator": gen[j],
                    "critic": critic[j],
                    "opt_g": opt_g[j],
                    "opt_d": opt_d[j],
                    "rng_cpu": rng_cpu.get_state(),
                    "rng_device": rng_dev.get_state(),
                    "log": torch.tensor(member.rows, dtype=torch.float64).reshape(len(member.rows), len(LOG_COLUMNS)),
                    "pending": pending[:, :, j].clone(),
                }
            )
        return states

    def write_checkpoints(self, iteration: int) -> None:
        """Each member's checkpoint at `iteration`, written atomically (`save_checkpoint`)."""
        for member, state in zip(self.members, self.member_states(iteration)):
            save_checkpoint(member.checkpoints, iteration, state)

    def restore(self, states: list[dict], capturable: bool) -> None:
        """Every member's checkpoint (all at one iteration) into the job's modules, optimizers and streams.
        `capturable`: this run's optimizer setting (a CUDA graph's), whatever the writing run used."""
        nets = self.networks
        nets.gen.load_state_dict(pack_state_dicts([s["generator"] for s in states]))
        nets.critic.load_state_dict(pack_state_dicts([s["critic"] for s in states]))
        for opt, key in ((self.opt_g, "opt_g"), (self.opt_d, "opt_d")):
            packed = pack_optimizer_states([s[key] for s in states])
            # The optimizer's placement of its step counts follows `capturable` of the groups it loads.
            packed["param_groups"] = [dict(group, capturable=capturable) for group in packed["param_groups"]]
            opt.load_state_dict(packed)
        if self.ema is not None:
            if any("generator_ema" not in s for s in states):
                raise LabelwiseError(
                    "a checkpoint without the generator average resumed with EMA on; "
                    "its fingerprint should have prevented this: delete the checkpoints to retrain"
                )
            self.ema.load_state_dict(pack_state_dicts([s["generator_ema"] for s in states]))
        for (rng_cpu, rng_dev), member, state in zip(self.rngs, self.members, states):
            rng_cpu.set_state(state["rng_cpu"])
            rng_dev.set_state(state["rng_device"].to("cpu"))
            member.elapsed = float(state["elapsed"])
            member.rows = [tuple(r) for r in state["log"].tolist()]
        pending = [s.get("pending", torch.zeros(0, DIAGNOSTICS)) for s in states]
        counts = {len(p) for p in pending}
        if len(counts) != 1:
            raise LabelwiseError("the members' checkpoints hold different numbers of pending log entries; rerun")
        device = self.networks.gen.parameters().__next__().device
        self.pending = [torch.stack([p[i] for p in pending], dim=1).to(device) for i in range(counts.pop())]
