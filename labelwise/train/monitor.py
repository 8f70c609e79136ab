"""Watching a training job while it runs: each member's live log, and TensorBoard when asked for.

* **Live log** (always): `<checkpoints>/live_log.csv` of each member (a label, or the conditional
  model), the training log CSV's header and every row so far, one whole line appended and flushed at
  each log point.  It is not a Snakemake output (the final log CSV is, written once at the end as
  before).  A job that starts afresh or resumes first rewrites it atomically with the rows it holds
  (none, or the checkpoint's), so after a resume it equals the rows so far: rows that a killed run
  logged after its last checkpoint are dropped and come again, the same.
* **TensorBoard** (`runtime.tensorboard`): one run folder per model and member,
  `<dir>/<model>/<label>` (`all`: the conditional model), with the scalars of every log row — losses,
  the gradient penalty and Wasserstein estimate (W-CGAN), and the job's label-iterations per second
  of training time — and, every `images_every` iterations, a grid of 16 samples of each member's
  generator (the first 16 of its evaluation noise stream, so they follow what sampling will draw).
  A job opens its runs with `purge_step` just after the iteration it starts at: TensorBoard hides what
  a stopped run wrote after its checkpoint (a fresh start: everything an earlier run wrote there).
  `torch.utils.tensorboard` needs the `tensorboard` package, imported only when the setting is on.

Nothing here draws from the training streams or changes a network: a job trains the same with and
without watching.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ..errors import LabelwiseError
from ..trainlog import LOG_COLUMNS, log_line, write_log

LIVE_LOG = "live_log.csv"
GRID_IMAGES = 16


def live_log_path(checkpoints) -> Path:
    return Path(checkpoints) / LIVE_LOG


def summary_writer_class():
    """torch.utils.tensorboard.SummaryWriter, or a LabelwiseError saying how to install it."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as exc:
        raise LabelwiseError(
            f"runtime.tensorboard is on but TensorBoard cannot be imported ({exc}): "
            "pip install 'tensorboard' (or labelwise[tensorboard]) in the jobs' environment, or set it off"
        ) from None
    return SummaryWriter


class JobMonitor:
    """The live logs (and TensorBoard runs) of a job's members.

    `members`: objects with `checkpoints` (their folder) and `rows` (their log rows so far);
    `run_names`: each member's TensorBoard run under `tensorboard/<model>/`; `tensorboard`: that
    root folder, None for no TensorBoard; `start`: the iteration the job starts or resumed at.
    """

    def __init__(
        self,
        members: list,
        model: str,
        run_names: list[str],
        start: int,
        tensorboard: Path | None = None,
        images_every: int = 0,
    ):
        self.members, self.start = members, start
        self.images_every = images_every if tensorboard is not None else 0
        self.writers = []
        if tensorboard is not None:
            writer_class = summary_writer_class()
            self.writers = [
                # Events after `start` are the stopped run's, logged again by this one (a fresh start:
                # every event of an earlier run, with other settings): TensorBoard hides them.
                writer_class(log_dir=str(Path(tensorboard) / model / name), purge_step=start + 1)
                for name in run_names
            ]
        self._rate_mark = None  # (iteration, training seconds) of the previous log row
        for m in members:
            write_log(live_log_path(m.checkpoints), m.rows)

    def log_rows(self, iteration: int, n_members: int) -> None:
        """The members' newest rows (just appended, all at `iteration`): to their live logs and runs."""
        rows = [m.rows[-1] for m in self.members]
        for m, row in zip(self.members, rows):
            with open(live_log_path(m.checkpoints), "a") as f:
                f.write(log_line(row))
        if not self.writers:
            return
        seconds = max(row[1] for row in rows)
        rate = None
        if self._rate_mark is not None and seconds > self._rate_mark[1]:
            rate = (iteration - self._rate_mark[0]) * n_members / (seconds - self._rate_mark[1])
        self._rate_mark = (iteration, seconds)
        for writer, row in zip(self.writers, rows):
            for name, value in zip(LOG_COLUMNS[2:], row[2:]):
                if not math.isnan(value):
                    writer.add_scalar(f"train/{name}", value, iteration)
            if rate is not None:
                writer.add_scalar("speed/label_iterations_per_s", rate, iteration)
            writer.flush()

    def images_due(self, iteration: int) -> bool:
        return self.images_every > 0 and iteration % self.images_every == 0

    def log_images(self, iteration: int, grids: list[np.ndarray]) -> None:
        """`grids[j]`: member j's images (N, C, H, W, uint8) to show at `iteration`."""
        for writer, images in zip(self.writers, grids):
            writer.add_images("samples", images, iteration, dataformats="NCHW")
            writer.flush()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        """Closes the TensorBoard runs, however the loop ended (their events are flushed at every row)."""
        for writer in self.writers:
            writer.close()
        self.writers = []
