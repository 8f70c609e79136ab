"""Per-label GAN training: the loop, its budget and its checkpoints; several labels packed into one computation."""

from ..trainlog import LOG_COLUMNS
from .generator_files import load_generator
from .loop import Budget, Outputs, TrainResult, label_seed, train_label
from .packed import train_packed

__all__ = [
    "LOG_COLUMNS",
    "Budget",
    "Outputs",
    "TrainResult",
    "label_seed",
    "load_generator",
    "train_label",
    "train_packed",
]
