"""Reading the training log CSVs that `labelwise.train.loop.write_log` writes (iteration,
wall_seconds, losses, ...): one reader for the figures, the FID-against-time curve and the
weak-scaling job records.  numpy only, so that figure and evaluation jobs need no torch for it."""
from __future__ import annotations

from pathlib import Path

import numpy as np


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
