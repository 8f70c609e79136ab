"""Device and thread selection: CUDA when present and allowed, never a silent fall-back to CPU."""
from __future__ import annotations

import os

import torch

from .errors import LabelwiseError


def select_device(requested: str = "auto") -> torch.device:
    """'auto' -> the first visible CUDA device if any, else CPU; 'cuda[:N]' must exist; 'cpu' is CPU."""
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if requested == "cpu":
        return torch.device("cpu")
    if requested.startswith("cuda"):
        if not torch.cuda.is_available():
            visible = os.environ.get("CUDA_VISIBLE_DEVICES", "<unset>")
            raise LabelwiseError(
                f"runtime.device is {requested!r} but no CUDA GPU is usable here "
                f"(CUDA_VISIBLE_DEVICES={visible}, torch {torch.__version__} built with CUDA {torch.version.cuda}); "
                "run on a GPU node, install a CUDA build of torch, or set runtime.device: auto/cpu"
            )
        device = torch.device(requested)
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise LabelwiseError(
                f"runtime.device is {requested!r} but only {torch.cuda.device_count()} CUDA device(s) are visible"
            )
        return device
    raise LabelwiseError(f"runtime.device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {requested!r}")


def set_threads(threads: int | None) -> None:
    if threads:
        torch.set_num_threads(int(threads))
