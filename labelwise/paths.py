"""Output paths and user-supplied names: every path labelwise writes stays inside its results tree.

`safe_name` is the one rule for a user string that becomes a path component (today `data.name`): 1
to NAME_MAX_CHARS characters of ``A-Z a-z 0-9 _ . -``, starting with a letter, digit or ``_`` —
never ``.``, ``..``, hidden, option-like, a separator, a shell metacharacter or a quote; the config
schema's `data.name` pattern is the same rule (tests/faults/test_fault_names.py checks that they
agree).  `inside(root, *parts)` joins `parts` under `root` and refuses any result not strictly
inside it, judged on the normalised path; symbolic links the user made are left alone.  Names that
only reach files' contents, figures and logs (class names, from folder names) are never made into
paths (shards are named by label index): `stored_name` is how such a name is kept in HDF5 and JSON,
which need valid UTF-8 where a folder name need not be.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from .errors import LabelwiseError, brief_repr

NAME_MAX_CHARS = 64
NAME_PATTERN = rf"^[A-Za-z0-9_][A-Za-z0-9_.-]{{0,{NAME_MAX_CHARS - 1}}}$"
_NAME = re.compile(NAME_PATTERN)
NAME_RULE = (
    f"it names a folder under results/: use 1 to {NAME_MAX_CHARS} letters, digits, '_', '.' or '-', "
    "starting with a letter, digit or '_' (so not '.' or '..')"
)


def safe_name(value, key: str = "data.name") -> str:
    """`value` when it is a safe path component (module docstring), else a one-line LabelwiseError."""
    if not isinstance(value, str) or not _NAME.fullmatch(value):  # fullmatch: `$` would let "a\n" through
        raise LabelwiseError(f"config key {key}: {brief_repr(value)} is not allowed; {NAME_RULE}")
    return value


def inside(root: str | os.PathLike, *parts: str | os.PathLike) -> Path:
    """`root` / parts, checked to lie strictly inside `root` (LabelwiseError otherwise)."""
    joined = Path(root, *parts)
    base, target = os.path.normpath(os.fspath(root)), os.path.normpath(os.fspath(joined))
    empty = any(os.fspath(p) in ("", ".") for p in parts)
    rel = os.path.relpath(target, base) if os.path.isabs(base) == os.path.isabs(target) else ".."
    if empty or rel in (".", "..") or rel.startswith(".." + os.sep):
        raise LabelwiseError(
            f"{joined}: would be written outside the results folder {root}; "
            "check the config names and paths that build it (data.name)"
        )
    return joined


def dataset_dir(results: str | os.PathLike, name: str) -> Path:
    """results/<name>: the one results tree of a dataset, `name` checked by `safe_name` and `inside`."""
    return inside(results, safe_name(name))


def stored_name(name: str) -> str:
    """A name read from the file system as text that HDF5 and JSON can store: bytes that are not
    UTF-8 (Python's surrogate escapes) become ``\\xNN``; every other character is kept."""
    return os.fsencode(name).decode("utf-8", "backslashreplace")
