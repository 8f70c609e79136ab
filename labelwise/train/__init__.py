"""Per-label GAN training: the loop, its budget and its checkpoints; several labels packed into one computation."""
from .loop import LOG_COLUMNS, Budget, Outputs, TrainResult, label_seed, load_generator, train_label
from .packed import train_packed

__all__ = ["LOG_COLUMNS", "Budget", "Outputs", "TrainResult", "label_seed", "load_generator", "train_label",
           "train_packed"]
