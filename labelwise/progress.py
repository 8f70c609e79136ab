"""Progress lines for long work: done/total, rate and ETA, at most one line every few seconds.

Training (`labelwise.train.loop`) and data preparation (`labelwise.data`) both report this way, so
a log shows the same "r <unit>/s ETA t" everywhere.  Torch-free: data preparation imports it.
"""

from __future__ import annotations

import logging
import math
import time


def format_eta(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    seconds = int(seconds)
    return f"{seconds // 3600}h{seconds // 60 % 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"


class Progress:
    """Counts items of `total`; `advance(n)` logs "<what>: d/t (p%) r <unit>/s ETA e" when
    `every_seconds` have passed since the last line; `finish()` logs the totals and the mean rate."""

    def __init__(self, what: str, total: int, unit: str, log: logging.Logger, every_seconds: float = 10.0):
        self.what, self.total, self.unit, self.log, self.every = what, total, unit, log, every_seconds
        self.done = 0
        self.start = self._last = time.monotonic()

    @property
    def rate(self) -> float:
        return self.done / max(time.monotonic() - self.start, 1e-9)

    def advance(self, n: int) -> None:
        self.done += n
        now = time.monotonic()
        if now - self._last >= self.every and self.done < self.total:
            self._last = now
            rate = self.rate
            eta = (self.total - self.done) / rate if rate > 0 else math.inf
            self.log.info(
                "%s: %d/%d %s (%.0f%%) %.1f %s/s ETA %s",
                self.what,
                self.done,
                self.total,
                self.unit,
                100.0 * self.done / max(self.total, 1),
                rate,
                self.unit,
                format_eta(eta),
            )

    def finish(self, note: str = "") -> None:
        seconds = time.monotonic() - self.start
        self.log.info(
            "%s: %d %s in %.1f s (%.1f %s/s)%s", self.what, self.done, self.unit, seconds, self.rate, self.unit, note
        )
