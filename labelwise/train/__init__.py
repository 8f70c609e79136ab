"""Per-label GAN training: the loop, its budget and its checkpoints."""
from .loop import ALGORITHMS, LOG_COLUMNS, Budget, Outputs, TrainResult, label_seed, load_generator, train_label

__all__ = ["ALGORITHMS", "LOG_COLUMNS", "Budget", "Outputs", "TrainResult", "label_seed", "load_generator", "train_label"]
