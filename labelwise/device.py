"""Device and thread selection: CUDA when present and allowed, never a silent fall-back to CPU.

On a machine with several GPUs and no scheduler (a workstation running `snakemake --cores N`),
nothing tells concurrent jobs apart: Snakemake assigns no GPU, and every process would pick
`cuda:0`. `select_device` therefore claims a free GPU *slot* for its process — an exclusive,
non-blocking `flock` on a per-GPU lock file, tried in device order — and keeps it until the
process ends or calls `release_gpu_claim` (the kernel drops a flock with the last descriptor, so
even a SIGKILLed job frees its slot). When a scheduler has already narrowed the job to one GPU
(Slurm's gres, `srun --gpus=1`,
`jsrun -g1`: `CUDA_VISIBLE_DEVICES` lists one device), that GPU is simply `cuda:0`.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import re
import time
from pathlib import Path
from typing import IO

import torch

from .errors import LabelwiseError

log = logging.getLogger("labelwise.device")

LOCK_DIR_ENV = "LABELWISE_GPU_LOCK_DIR"

# The slot this process holds: (index, lock file handle), kept open for the life of the process.
_claimed: tuple[int, IO] | None = None


def default_lock_dir() -> Path:
    """$LABELWISE_GPU_LOCK_DIR, else /tmp/labelwise-gpu-locks-<uid> (per user, shared by all its jobs)."""
    env = os.environ.get(LOCK_DIR_ENV)
    return Path(env) if env else Path("/tmp") / f"labelwise-gpu-locks-{os.getuid()}"


def _open_lock_dir(lock_dir: Path) -> Path:
    lock_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    st = lock_dir.stat()
    if st.st_uid != os.getuid():  # someone else's directory in a shared /tmp: do not trust it
        raise LabelwiseError(
            f"GPU lock directory {lock_dir} belongs to uid {st.st_uid}, not to you (uid {os.getuid()}); "
            f"set {LOCK_DIR_ENV} to a directory of your own"
        )
    return lock_dir


def _try_lock(path: Path) -> IO | None:
    handle = open(path, "a+")
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        handle.close()
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return None
        raise
    handle.truncate(0)  # who holds it, for people looking at the lock files
    handle.write(f"pid {os.getpid()}\n")
    handle.flush()
    return handle


def claim_gpu(
    n_devices: int,
    lock_dir: str | Path | None = None,
    *,
    names: list[str] | None = None,
    poll_seconds: float = 2.0,
    timeout: float | None = None,
) -> tuple[int, IO]:
    """Claim the first free GPU slot of `n_devices`: returns (index, open lock file handle).

    The slot stays claimed while the handle is open (close it, or end the process, to release it).
    Lock files are `<lock_dir>/gpu-<name>.lock`, `names[i]` identifying device i (its UUID where
    known, so that jobs seeing the same GPU under other indices still exclude each other; default:
    the index). When every slot is taken this waits, polling every `poll_seconds`, and says so in
    the log; after `timeout` seconds (None: no limit) it raises LabelwiseError.
    """
    if n_devices < 1:
        raise LabelwiseError(f"claim_gpu needs at least one device, got {n_devices}")
    names = [str(i) for i in range(n_devices)] if names is None else [str(n) for n in names]
    if len(names) != n_devices:
        raise LabelwiseError(f"claim_gpu: {len(names)} names for {n_devices} devices")
    directory = _open_lock_dir(Path(lock_dir) if lock_dir is not None else default_lock_dir())
    paths = [directory / f"gpu-{re.sub(r'[^A-Za-z0-9_.-]', '_', n)}.lock" for n in names]
    start = time.monotonic()
    next_note, waited = start, False
    while True:
        for index, path in enumerate(paths):
            handle = _try_lock(path)
            if handle is not None:
                if waited:
                    log.info("GPU slot %d is free now (waited %.0f s)", index, time.monotonic() - start)
                return index, handle
        now = time.monotonic()
        if timeout is not None and now - start >= timeout:
            raise LabelwiseError(
                f"all {n_devices} GPUs are claimed by other labelwise processes (lock files in {directory}) "
                f"and none was released within {timeout:.0f} s"
            )
        if now >= next_note:  # at once, then every 10 minutes
            log.warning(
                "all %d GPUs are claimed by other labelwise processes (lock files in %s); waiting for one "
                "to be released. Run Snakemake with --resources gpu=%d to start no more GPU jobs than GPUs",
                n_devices,
                directory,
                n_devices,
            )
            next_note = now + 600.0
        time.sleep(poll_seconds)
        waited = True


def _device_names(n: int) -> list[str]:
    """A stable name per visible CUDA device: its UUID when torch reports one, else its index."""
    names = []
    for i in range(n):
        try:
            uuid = getattr(torch.cuda.get_device_properties(i), "uuid", None)
        except Exception:  # noqa: BLE001 - a name is only a nicety; the index still works
            uuid = None
        names.append(str(uuid) if uuid else str(i))
    return names


def _claimed_cuda_device() -> torch.device:
    """cuda:0 when the job sees one GPU; with several, the slot this process claims (once)."""
    global _claimed
    n = torch.cuda.device_count()
    if n <= 1:
        return torch.device("cuda:0")
    if _claimed is None:
        index, handle = claim_gpu(n, names=_device_names(n))
        _claimed = (index, handle)
        visible = os.environ.get("CUDA_VISIBLE_DEVICES", "<unset>")
        log.info("claimed GPU slot %d of %d (CUDA_VISIBLE_DEVICES=%s; lock %s)", index, n, visible, handle.name)
    return torch.device(f"cuda:{_claimed[0]}")


def release_gpu_claim() -> None:
    """Give back the GPU slot this process claimed (its lock file is closed), so that another job can
    take it before this process ends; the next `select_device` claims afresh.  Nothing to do without one."""
    global _claimed
    if _claimed is not None:
        _claimed[1].close()
        _claimed = None


def select_device(requested: str = "auto") -> torch.device:
    """'auto' -> a CUDA device if any, else CPU; 'cuda' must exist; 'cuda:N' is that device; 'cpu' is CPU.

    For 'auto' and 'cuda' with several GPUs visible, the device is a GPU slot claimed for this
    process (see the module docstring); 'cuda:N' is taken as given, unclaimed.
    """
    if requested == "cpu":
        return torch.device("cpu")
    if requested == "auto":
        return _claimed_cuda_device() if torch.cuda.is_available() else torch.device("cpu")
    if requested.startswith("cuda") and re.fullmatch(r"cuda(:[0-9]+)?", requested):
        if not torch.cuda.is_available():
            visible = os.environ.get("CUDA_VISIBLE_DEVICES", "<unset>")
            raise LabelwiseError(
                f"runtime.device is {requested!r} but no CUDA GPU is usable here "
                f"(CUDA_VISIBLE_DEVICES={visible}, torch {torch.__version__} built with CUDA {torch.version.cuda}); "
                "run on a GPU node, install a CUDA build of torch, or set runtime.device: auto/cpu"
            )
        if requested == "cuda":
            return _claimed_cuda_device()
        device = torch.device(requested)
        if device.index >= torch.cuda.device_count():
            raise LabelwiseError(
                f"runtime.device is {requested!r} but only {torch.cuda.device_count()} CUDA device(s) are visible"
            )
        return device
    raise LabelwiseError(f"runtime.device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {requested!r}")


def set_threads(threads: int | None) -> None:
    if threads:
        torch.set_num_threads(int(threads))
