"""Lets the CUDA-only torchvision wheel import on a CPU-only torch (test/dev venv only).

PyPI ships torchvision 0.28 only as a CUDA build; next to the CPU build of torch its compiled ops
fail to register, and `import torchvision` dies on the fake-kernel registration of
`torchvision::nms` / `torchvision::qnms`.  Declaring those two schemas before torchvision loads
lets it import (its compiled image ops stay unavailable; labelwise reads files with PIL).

tools/bootstrap_venv.sh installs this module into the venv's site-packages together with a .pth
line that imports it, and only when the installed pair is mismatched.  It is not part of the
labelwise package: users with a matching torch/torchvision never load it.
"""

import importlib.abc
import sys


class _DeclareTorchvisionOps(importlib.abc.MetaPathFinder):
    """On the first `import torchvision`, declare the op schemas, then step aside."""

    _library = None  # keeps the torch.library.Library alive for the process lifetime

    def find_spec(self, fullname, path=None, target=None):
        if fullname != "torchvision":
            return None
        sys.meta_path.remove(self)
        import torch

        lib = torch.library.Library("torchvision", "DEF")
        for op in ("nms", "qnms"):
            lib.define(f"{op}(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        type(self)._library = lib
        return None  # let the normal finders load torchvision


sys.meta_path.insert(0, _DeclareTorchvisionOps())
