"""GAN training: one loop (`train_job`) for every job — K labels of a per-label model (K=1: one label)
or the conditional model — with its budget, checkpoints, networks and iteration in the modules below.

The names below load on first use, so that importing one submodule (sampling reads generator files
through `labelwise.train.generator_files`) does not import the training loop.
"""

import importlib

_EXPORTS = {
    "LOG_COLUMNS": "..trainlog",
    "Budget": ".compute",
    "load_generator": ".generator_files",
    "Outputs": ".loop",
    "TrainResult": ".loop",
    "train_job": ".loop",
    "train_label": ".loop",
}
__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name], __name__), name)
