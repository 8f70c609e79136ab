"""The training loop's bookkeeping: its schedule (`Cadence`), the stop on a signal, the checkpoint
fingerprint and the divergence error (`labelwise.train.loop.train_job`)."""

from __future__ import annotations

import hashlib
import json
import math
import signal
import time
from typing import TYPE_CHECKING

from ..errors import LabelwiseError
from ..progress import format_eta

if TYPE_CHECKING:
    from .compute import Budget


def training_fingerprint(model: str, settings: dict, seed: int, label: int, shard_sha256: str) -> str:
    """What a checkpoint was trained with (model, settings, seed, label, data checksum), hashed: a
    checkpoint resumes only a run with the same fingerprint."""
    blob = json.dumps(
        {"model": model, "settings": settings, "seed": seed, "label": label, "data": shard_sha256}, sort_keys=True
    )
    return hashlib.sha256(blob.encode()).hexdigest()


class StopRequest:
    """Turns SIGTERM (a scheduler's wall-time warning, scancel) and SIGINT (Ctrl-C) into a checkpoint
    and a clean stop.  A second Ctrl-C while that checkpoint is written is ignored, so the job never
    dies mid-write; SIGKILL remains for an immediate stop."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self):
        self.signal = None
        self._previous = {}

    def __enter__(self):
        try:
            self._previous = {s: signal.signal(s, self._handle) for s in self.SIGNALS}
        except ValueError:  # not in the main thread: leave signals alone
            self._previous = {}
        return self

    def _handle(self, signum, frame):
        if self.signal is None:
            self.signal = signum

    def __exit__(self, *exc):
        for s, previous in self._previous.items():
            signal.signal(s, previous)


class Cadence:
    """The bookkeeping schedule of the training loop: what falls due after an iteration (log rows,
    weight checks, checkpoints), the progress line, and how the loop ends."""

    def __init__(self, budget: Budget, start: int, progress_seconds: float, labels: int = 1):
        self.budget = budget
        self.labels = labels  # label-iterations per iteration: what a packed job delivers
        self.points = dict(budget.snapshot_points())
        self.deadline = budget.minutes * 60.0 if budget.minutes else math.inf
        self.progress_seconds = progress_seconds
        now = time.monotonic()
        self._last_progress = now
        self._rate_mark = (now, start)  # the rate is the mean over this run, resumed part excluded
        self._last = self._rate_mark  # (time, iteration) of the last progress line

    def due(self, iteration: int, elapsed: float, stopping) -> tuple[bool, bool, bool, bool]:
        """(at_end, log, check, checkpoint) after `iteration`: whether the loop ends here, a log row
        is due (losses reduced and checked), the weights must be checked finite (before any
        snapshot or checkpoint), and a checkpoint is due."""
        b = self.budget
        finished = iteration >= b.iterations or elapsed >= self.deadline  # the budget's end
        at_end = finished or stopping is not None
        checkpoint = iteration % b.checkpoint_every == 0 or at_end
        # A signal forces a checkpoint but no log row: a run stopped and resumed logs what one never
        # stopped logs (the checkpoint carries the pending diagnostics instead).
        log_row = iteration % b.checkpoint_every == 0 or finished or iteration % b.log_every == 0
        return at_end, log_row, checkpoint or iteration in self.points, checkpoint

    def progress(self, iteration: int, elapsed: float, at_end: bool) -> str | None:
        """The progress text ("it i/n (p%) r it/s ETA t (r·K label-it/s)") when one is due, every `progress_seconds`."""
        now = time.monotonic()
        if now - self._last_progress < self.progress_seconds and not at_end:
            return None
        b = self.budget
        rate = (iteration - self._rate_mark[1]) / max(now - self._rate_mark[0], 1e-9)
        remaining = (b.iterations - iteration) / rate if rate > 0 else math.inf
        if b.minutes:
            remaining = min(remaining, max(self.deadline - elapsed, 0.0))
        self._last_progress = now
        self._last = (now, iteration)
        return (
            f"it {iteration}/{b.iterations} ({100.0 * iteration / b.iterations:.0f}%) {rate:.2f} it/s "
            f"ETA {format_eta(remaining)} ({rate * self.labels:.1f} label-it/s)"
        )

    def rate_text(self) -> str:
        """'; <r> label-it/s' over this run (resumed part excluded) for the final log line."""
        done, seconds = self._last[1] - self._rate_mark[1], max(self._last[0] - self._rate_mark[0], 1e-9)
        return f"; {done / seconds * self.labels:.1f} label-it/s" if done > 0 else ""

    def should_stop(self, iteration: int, elapsed: float, stopping, who: str, saved: str) -> bool:
        """Called last in an iteration, after its checkpoint: a signal ends the job with one error
        line; True when the minutes budget is spent."""
        if stopping is not None:
            raise LabelwiseError(
                f"{who} stopped by signal {stopping} at iteration {iteration}; {saved}; rerun to resume"
            )
        return elapsed >= self.deadline


def first_names(names: list[str]) -> str:
    """The first three of `names` and how many more: for error messages that list tensors."""
    return ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")


def divergence_error(who: str, what: str, kept: str, model: str) -> LabelwiseError:
    """The one error a diverged job ends with: what went wrong, what was kept, and the fix."""
    return LabelwiseError(
        f"{who} training diverged: {what}; {kept}. Lower models.{model}.lr or change the seed, then rerun"
    )
