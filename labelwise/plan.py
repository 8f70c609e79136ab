"""What the pipeline runs for a validated config: its labels, its models in the papers' order, each
model's training settings and the paper table's caption.

rules/common.smk reads these at parse time and the `labelwise` command line reads them for its
default paths, so a stage run by hand does what its Snakemake job does.  Torch-free: every
`snakemake` invocation parses the Snakefile (tests/test_parse.py).
"""
from __future__ import annotations

from .errors import LabelwiseError

# The papers' order (per-label W-CGAN, DC-CGAN, then the single CGAN) in every table and figure,
# whatever order config files and --config merged the models in.
MODEL_ORDER = ("wcgan", "dccgan", "cgan")


def ordered_models(models) -> list[str]:
    return sorted(models, key=lambda m: (list(MODEL_ORDER) + [m]).index(m))


def dataset_name(config: dict) -> str:
    return config["data"]["name"] or config["data"]["source"]


def selected_labels(config: dict) -> tuple[list[int], list[int]]:
    """(labels trained and evaluated, labels sharded).  mnist5k and CIFAR are small: one job shards
    every label, so selecting more labels later reuses the shards; an image folder (ImageNet: 1.3 M
    files) is sharded for the selected labels only."""
    from .data import num_classes  # here, not at the top: the command line imports this module

    data = config["data"]
    n = num_classes(data["source"], data["root"])
    if data["labels"] == "all":
        labels = list(range(n))
    else:
        labels = sorted(data["labels"])
        bad = [k for k in labels if k >= n]
        if bad:
            raise LabelwiseError(f"config key data.labels: {bad} do not exist in {data['source']} (labels are 0..{n - 1})")
    return labels, labels if data["source"] == "imagefolder" else list(range(n))


def train_settings(config: dict, model: str, n_labels: int) -> dict:
    """Everything that shapes one model's training: its section, the budget and the seed.  The
    single conditional GAN gets the sum of the per-label jobs' budgets (the papers' comparison)."""
    budget = dict(config["budget"])
    if not budget.get("snapshots"):
        budget.pop("snapshots", None)  # no snapshots: the same params (no rerun) as before the key existed
    if budget.get("gflop") is None:
        budget.pop("gflop", None)  # no compute budget: likewise
    if model == "cgan":
        budget["iterations"] *= n_labels
        if budget["minutes"]:
            budget["minutes"] *= n_labels
        if budget.get("gflop"):
            budget["gflop"] *= n_labels
    return {"model": config["models"][model], "budget": budget, "seed": config["seed"]}


def paper_table_caption(config: dict, n_labels: int) -> str:
    return (f"{dataset_name(config)}: per-label models and the single CGAN, {n_labels} labels, "
            f"{config['evaluation']['samples_per_label']} samples per label, budget " + budget_text(config["budget"]))


def budget_text(budget: dict) -> str:
    """The training budget in words: equal counted compute (budget.gflop) or equal iterations."""
    text = f"{budget['iterations']} generator iterations per label"
    if budget.get("gflop"):
        text = f"{budget['gflop']:g} counted GFLOP per label (equal compute; at most {text})"
    if budget.get("minutes"):
        text += f", at most {budget['minutes']:g} minutes"
    return text
