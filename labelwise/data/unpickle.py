"""A restricted unpickler for the CIFAR "python version" batches.

A pickle is a program: loading one with `pickle.load` can call any importable function
(`os.system`, `builtins.eval`, ...), so a dataset file from the internet or a shared drive is a
code-execution risk.  The CIFAR batches only ever hold dicts, lists, bytes, strings, numbers and
numpy uint8 arrays, so `RestrictedUnpickler.find_class` -- the only way a pickle can name a
callable, including through the copyreg extension opcodes -- admits exactly the globals that
format needs and refuses everything else before it is imported, let alone called.
"""

from __future__ import annotations

import builtins
import pickle
from typing import IO

import numpy as np

from ..errors import LabelwiseError

# Plain containers/scalars.  Pickles written by Python 2 name the module `__builtin__`; the default
# find_class maps that name, but an override receives it raw, so accept both spellings.
_BUILTINS = ("dict", "list", "bytes", "str", "int", "float", "tuple")

# numpy array reconstruction.  numpy 2 moved `numpy.core` to `numpy._core` (the old name still
# imports but warns), and the official files were written by numpy 1, the mini copy by numpy 2:
# resolve both spellings to whichever module this numpy actually has.
_NUMPY_MULTIARRAY = ("numpy.core.multiarray", "numpy._core.multiarray")
_NUMPY_MULTIARRAY_NAMES = ("_reconstruct", "scalar")


def _multiarray():
    try:
        from numpy._core import multiarray  # numpy >= 2
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core import multiarray
    return multiarray


def _latin1_encode(text: str, encoding: str = "utf-8") -> bytes:
    """Stand-in for `_codecs.encode`, which protocol-2 pickles written by Python 3 use for bytes.

    The real function reaches every registered codec (zlib, bz2, ...); bytes objects are only ever
    pickled as `encode(<str>, 'latin1')`, so that is the one call honoured.
    """
    if encoding not in ("latin1", "latin-1") or not isinstance(text, str):
        raise pickle.UnpicklingError(f"_codecs.encode with encoding {encoding!r} is not how bytes are pickled")
    return text.encode("latin1")


def _allowed(module: str, name: str):
    """The object a CIFAR pickle may legitimately name as `module.name`, or None."""
    if module in ("builtins", "__builtin__") and name in _BUILTINS:
        return getattr(builtins, name)
    if module in _NUMPY_MULTIARRAY and name in _NUMPY_MULTIARRAY_NAMES:
        return getattr(_multiarray(), name)
    if module == "numpy" and name in ("ndarray", "dtype"):
        return getattr(np, name)
    if module == "_codecs" and name == "encode":
        return _latin1_encode
    return None


class RestrictedUnpickler(pickle.Unpickler):
    """`pickle.Unpickler` that resolves only the globals listed in `_allowed`."""

    def __init__(self, file: IO[bytes], source_name: str):
        # encoding="bytes": keys and strings of Python 2 pickles stay bytes, as the format documents.
        super().__init__(file, encoding="bytes")
        self.source_name = source_name

    def find_class(self, module: str, name: str):
        obj = _allowed(module, name)
        if obj is None:
            raise LabelwiseError(f"refusing to load {module}.{name} from {self.source_name}: not a CIFAR pickle")
        return obj


def load_restricted(file: IO[bytes], source_name: str):
    """Unpickle `file` with `RestrictedUnpickler`; any failure is a LabelwiseError naming `source_name`."""
    try:
        return RestrictedUnpickler(file, source_name).load()
    except LabelwiseError:
        raise
    except (
        pickle.UnpicklingError,
        EOFError,
        ValueError,
        TypeError,
        AttributeError,
        IndexError,
        KeyError,
        MemoryError,
        OSError,
    ) as exc:
        # Truncated or garbage input surfaces as any of these depending on where the parser stops.
        raise LabelwiseError(
            f"{source_name}: not a readable CIFAR pickle ({type(exc).__name__}: {exc}); "
            "replace it with the original file from the CIFAR archive"
        ) from None
