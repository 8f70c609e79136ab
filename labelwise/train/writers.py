"""One writer per checkpoint folder: the exclusive lock a training job holds on every folder it writes.

Two jobs writing one label's checkpoint folder destroy each other's work (a second `labelwise train`
with another learning rate deleted the first's checkpoints while it ran; both exited 0).  So a
training function decorated with `one_writer` first checks that its labels' output paths are
distinct, then takes `fcntl.flock(LOCK_EX)` on `<checkpoints>/.lock` for each label until it
returns; a second writer stops at once with a LabelwiseError naming the holder's process id and
host, written in the file.  The kernel drops a flock however its process ends, so a lock never
outlives its job, and a folder the job created and left without a checkpoint is removed again.
Where the file system refuses locks, a warning says that a second writer cannot be detected there
(which file systems enforce it: docs/faults.md).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import inspect
import logging
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

from ..errors import LabelwiseError
from ..io import write_failure

log = logging.getLogger("labelwise.train")
LOCK_NAME = ".lock"
_UNSUPPORTED = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL}


def check_distinct(outputs, labels) -> None:
    """LabelwiseError when two labels (or two kinds of output) of one job share a path."""
    seen: dict[Path, tuple[str, object]] = {}
    for label, out in zip(labels, outputs):
        for kind in ("checkpoints", "generator", "log", "snapshots"):
            path = getattr(out, kind, None)
            if path is None:
                continue
            key = Path(path).resolve()
            if key in seen:
                other_kind, other_label = seen[key]
                raise LabelwiseError(
                    f"train: {path} is given as the --{other_kind} of label {other_label} and the --{kind} of "
                    f"label {label}; every label needs its own checkpoint folder, generator, log and snapshot file, "
                    "or they overwrite each other"
                )
            seen[key] = (kind, label)


def _holder(fd: int) -> str:
    """What the lock file says about its holder ('pid 123 on host node7'); read for up to 0.5 s,
    since the holder writes it just after taking the lock."""
    for _ in range(50):
        text = os.pread(fd, 200, 0).decode("utf-8", "replace").strip()
        if text:
            return text
        time.sleep(0.01)
    return "another process (it has not written its process id yet)"


@contextlib.contextmanager
def checkpoint_lock(folder: str | os.PathLike) -> Iterator[None]:
    """Hold the exclusive lock of the checkpoint folder `folder` (created if missing) in this block."""
    folder = Path(folder)
    path = folder / LOCK_NAME
    # The folders this call creates (the checkpoint folder and any missing parents, e.g. <model>/):
    # removed again if the job leaves them without a checkpoint.
    created = [d for d in (folder, *folder.parents) if not d.exists()]
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise LabelwiseError(write_failure(path, exc)) from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise LabelwiseError(
                f"{folder}: checkpoint folder in use by {_holder(fd)}: another job is training this label into it. "
                "Let it finish or stop it, then rerun; two writers would overwrite each other's checkpoints"
            ) from None
        except OSError as exc:
            if exc.errno not in _UNSUPPORTED:
                raise LabelwiseError(write_failure(path, exc)) from None
            log.warning(
                "%s: the file system does not support locks (%s); a second job writing this checkpoint "
                "folder at the same time cannot be detected",
                path,
                exc.strerror,
            )
        else:
            try:  # a note for a second writer's message; the lock holds without it (a full disk)
                os.ftruncate(fd, 0)
                os.pwrite(fd, f"pid {os.getpid()} on host {socket.gethostname()}\n".encode(), 0)
            except OSError as exc:
                log.warning("%s: could not record this job in the lock file (%s)", path, exc.strerror)
        yield
    finally:
        if created:  # a job that failed before its first checkpoint (a bad shard) leaves no folder behind
            with contextlib.suppress(OSError):
                if os.listdir(folder) == [LOCK_NAME]:
                    path.unlink()
                    for directory in created:  # innermost first; stops at the first one not empty
                        directory.rmdir()
        os.close(fd)  # releases the lock


@contextlib.contextmanager
def checkpoint_locks(folders) -> Iterator[None]:
    """`checkpoint_lock` on every folder in `folders`, in order, all held in this block."""
    with contextlib.ExitStack() as stack:
        for folder in folders:
            stack.enter_context(checkpoint_lock(folder))
        yield


def one_writer(train):
    """Decorator for the training loop (`train_job`): distinct output paths per label (`check_distinct`)
    and every checkpoint folder locked while `train` runs.  Reads the `outputs` argument (one Outputs
    or a list) and `labels`/`label`."""
    signature = inspect.signature(train)

    @functools.wraps(train)
    def locked(*args, **kwargs):
        arguments = signature.bind(*args, **kwargs).arguments
        outputs = arguments["outputs"]
        outputs = list(outputs) if isinstance(outputs, (list, tuple)) else [outputs]
        labels = arguments.get("labels") or [arguments.get("label", "?")] * len(outputs)
        check_distinct(outputs, labels)
        with checkpoint_locks(out.checkpoints for out in outputs):
            return train(*args, **kwargs)

    return locked
