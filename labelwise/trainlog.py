"""The training log CSV (iteration, wall_seconds, losses, ...): written by both training loops, read
by the figures, the FID-against-time curve and the weak-scaling job records.  numpy only, so that
figure and evaluation jobs need no torch for it."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from .io import atomic_path

LOG_COLUMNS = ("iteration", "wall_seconds", "d_loss", "g_loss", "gradient_penalty", "wasserstein_estimate")


def read_train_log(path) -> dict[str, np.ndarray]:
    """A training log CSV as columns of floats (empty cells -> NaN)."""
    lines = Path(path).read_text().splitlines()
    header = lines[0].split(",")
    rows = [[float(v) if v else np.nan for v in line.split(",")] for line in lines[1:] if line]
    data = np.array(rows, dtype=float).reshape(len(rows), len(header))
    return {name: data[:, i] for i, name in enumerate(header)}


def last_log_row(path) -> tuple[int | None, float | None]:
    """(iteration, wall_seconds) of a training log CSV's last row; (None, None) for a missing log
    or one without rows."""
    try:
        lines = [line for line in Path(path).read_text().splitlines() if line.strip()]
    except FileNotFoundError:
        return None, None
    if len(lines) < 2:
        return None, None
    cells = lines[-1].split(",")
    return int(float(cells[0])), float(cells[1])


def log_line(row) -> str:
    """One row ((iteration, wall_seconds, losses...); NaN -> empty cell) as a line of the CSV."""
    return f"{int(row[0])},{row[1]:.3f}," + ",".join("" if math.isnan(v) else f"{v:.6g}" for v in row[2:]) + "\n"


def write_log(path, rows) -> None:
    """The training log CSV of `rows`, written atomically (the final log, and the live log of a
    job that starts or resumes: labelwise.train.monitor)."""
    with atomic_path(path) as tmp:
        with open(tmp, "w") as f:
            f.write(",".join(LOG_COLUMNS) + "\n")
            f.writelines(log_line(r) for r in rows)
