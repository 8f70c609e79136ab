"""Atomic file output: every file labelwise writes appears whole under its final name or not at all.

Writers get a temporary sibling path (same directory, so the final rename is atomic on POSIX), and
the rename happens only when the writer returned without error; a killed process can leave a
`*.tmp-<pid>` file behind, never a truncated final file.  A write that fails in the file system
(disk full, quota, read-only or vanished folder) is a LabelwiseError naming the final path and the
fix, which needs the bytes to reach the disk through Python's own file writes: torch.save and h5py
report a full disk from C/C++ as a cryptic RuntimeError ("unexpected pos 704 vs 598"), and h5py can
crash the interpreter cleaning up after it.  So `save_torch` (and `labelwise.images.write_images`)
serialise in memory and write the bytes with `write_bytes`.
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import os
from collections.abc import Iterator
from pathlib import Path

from .errors import LabelwiseError


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, fsync: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success fsync it and rename it to `path`."""
    final = Path(path)
    # Keep the real suffix last: libraries such as matplotlib pick the format from it.
    tmp = final.with_name(f".{final.stem}.tmp-{os.getpid()}{final.suffix}")
    try:
        final.parent.mkdir(parents=True, exist_ok=True)  # inside: a read-only folder is a write failure too
        yield tmp
        if fsync:
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
        os.replace(tmp, final)
        if fsync:
            _fsync_dir(final.parent)
    except OSError as exc:
        raise LabelwiseError(write_failure(final, exc)) from None
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()


_NO_SPACE = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC), errno.EFBIG}
_NOT_WRITABLE = {errno.EROFS, errno.EACCES, errno.EPERM}


def fix_for(exc: OSError) -> str:
    """What to do about a failed file-system operation, by its errno."""
    if exc.errno in _NO_SPACE:
        return "free space (or quota) on that file system, or move the results elsewhere, then rerun"
    if exc.errno in _NOT_WRITABLE:
        return "make that folder writable for this user (or move the results elsewhere), then rerun"
    if exc.errno in (errno.ENOENT, errno.ENOTDIR, errno.EEXIST, errno.EISDIR, errno.ENOTEMPTY):
        return "a file or folder on that path is missing or in the way: move it aside, then rerun"
    return "check that file system, then rerun"


def write_failure(path: str | os.PathLike, exc: OSError) -> str:
    """One line: which file could not be written, why, and what to do about it."""
    why = exc.strerror or str(exc) or type(exc).__name__
    return f"{os.fspath(path)}: could not write it ({why}); nothing was written under that name; {fix_for(exc)}"


def file_system_failure(exc: OSError) -> str:
    """One line for an OSError that names a file (a stage's file-system failure outside `atomic_path`:
    a folder that cannot be created, a file that cannot be removed): the file, why, and the fix."""
    where = os.fspath(exc.filename) + (f" -> {os.fspath(exc.filename2)}" if exc.filename2 else "")
    return f"{where}: {exc.strerror or exc}; {fix_for(exc)}"


def write_bytes(path: str | os.PathLike, data) -> None:
    """Write `data` (bytes or a buffer) atomically to `path`."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)


def save_torch(obj, path: str | os.PathLike) -> None:
    """torch.save `obj` atomically to `path`, serialised in memory first (see the module docstring)."""
    import torch

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    write_bytes(path, buffer.getbuffer())


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: str | os.PathLike, obj) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")
