"""Memory estimates before large allocations: refuse in one line what cannot fit, instead of a
`MemoryError` traceback halfway through (or the kernel's OOM killer on the whole job).

`available_bytes` is the least of what the machine, the job's cgroup (Slurm's memory limit) and the
process's address-space limit (`ulimit -v`, RLIMIT_AS) still allow; `require` compares an estimate
with it.  Estimates are of the allocations that the stage makes at once (a shard's pixels, a label's
samples, a generator batch), not of the whole process.  Torch-free: the data stage imports it.
"""

from __future__ import annotations

import os
import resource
from pathlib import Path

from .errors import LabelwiseError


def human_bytes(n: float) -> str:
    """1536 -> '1.5 KiB'; powers of 1024, one decimal."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"  # pragma: no cover - the loop returns


def _meminfo_available() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None  # "max": no limit


def _cgroup_available() -> int | None:
    """limit - usage of this process's memory cgroup (v2, else v1), None without a limit."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        if parts[0] == "0" and parts[1] == "":  # cgroup v2
            base = Path("/sys/fs/cgroup") / parts[2].lstrip("/")
            limit, usage = _read_int(base / "memory.max"), _read_int(base / "memory.current")
        elif "memory" in parts[1].split(","):  # cgroup v1
            base = Path("/sys/fs/cgroup/memory") / parts[2].lstrip("/")
            limit, usage = _read_int(base / "memory.limit_in_bytes"), _read_int(base / "memory.usage_in_bytes")
        else:
            continue
        if limit is not None and usage is not None and limit < 1 << 60:  # v1 writes "no limit" as ~2^63
            return max(0, limit - usage)
    return None


def _address_space_available() -> int | None:
    """RLIMIT_AS minus the address space already mapped (VmSize), None without a limit."""
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft == resource.RLIM_INFINITY:
        return None
    try:
        for line in Path(f"/proc/{os.getpid()}/status").read_text().splitlines():
            if line.startswith("VmSize:"):
                return max(0, soft - int(line.split()[1]) * 1024)
    except (OSError, ValueError, IndexError):
        pass
    return soft


def available_bytes() -> tuple[int, str] | None:
    """(bytes this process can still allocate, which limit that is), or None where none is known."""
    found = [
        (value, what)
        for value, what in (
            (_meminfo_available(), "MemAvailable of this machine"),
            (_cgroup_available(), "the job's memory limit (cgroup)"),
            (_address_space_available(), "the address-space limit (ulimit -v)"),
        )
        if value is not None
    ]
    return min(found) if found else None


# An estimate counts the big arrays, not the temporaries around them: it must leave this share free.
HEADROOM = 0.1


def require(nbytes: int, what: str, fix: str) -> None:
    """LabelwiseError when `what` (an allocation of about `nbytes`) does not fit in `available_bytes`
    with HEADROOM to spare."""
    available = available_bytes()
    if available is not None and nbytes > (1 - HEADROOM) * available[0]:
        raise LabelwiseError(
            f"{what} needs about {human_bytes(nbytes)} of memory but only {human_bytes(available[0])} is "
            f"available ({available[1]}); {fix}"
        )
