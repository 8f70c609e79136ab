"""What the pipeline runs for a validated config: its labels, its models in the papers' order, each
model's training settings and the paper table's caption.

rules/common.smk reads these at parse time and the `labelwise` command line reads them for its
default paths, so a stage run by hand does what its Snakemake job does.  Torch-free: every
`snakemake` invocation parses the Snakefile (tests/test_parse.py).
"""

from __future__ import annotations

import re

from . import models
from .errors import LabelwiseError

# Image sizes the networks are built for (labelwise.nets): 4x4 doubled by each up-sampling block.
RESOLUTIONS = (16, 32, 64, 128)


def network_resolution(image_size: int) -> int:
    """The smallest supported power-of-two size that holds `image_size` (MNIST's 28 -> 32)."""
    for r in RESOLUTIONS:
        if image_size <= r:
            return r
    raise ValueError(f"images of {image_size} px exceed the largest supported resolution {RESOLUTIONS[-1]}")


def ordered_models(names) -> list[str]:
    """The papers' order (the registry's: per-label models, then the single CGAN) in every table and
    figure, whatever order config files and --config merged the models in."""
    return models.ordered(names)


# Every file the pipeline writes, one template each, under the dataset's results tree {ds}
# (results/<dataset>) or its log tree {logs} (logs/<dataset>).  The rules fill {ds} and leave the
# other fields as Snakemake wildcards; the command line and the metrics code fill them all.  A
# conditional model's generator, log, snapshots and checkpoints take labelwise.models.ALL as {label}.
LAYOUT = {
    "meta": "{ds}/meta.json",
    "shard": "{ds}/shards/{label}.h5",
    "generator": "{ds}/{model}/generators/{label}.pt",
    "train_log": "{ds}/{model}/train_logs/{label}.csv",
    "snapshots": "{ds}/{model}/snapshots/{label}.pt",
    "checkpoints": "{ds}/{model}/checkpoints/{label}",
    "samples": "{ds}/{model}/samples/{label}.h5",
    "metrics": "{ds}/{model}/metrics.json",
    "metrics_table": "{ds}/{model}/metrics.csv",
    "fid_vs_time": "{ds}/{model}/fid_vs_time.{ext}",
    "classifier": "{ds}/classifier/classifier.pt",
    "classifier_summary": "{ds}/classifier/classifier.json",
    "stats_dir": "{ds}/stats",
    "stats": "{stats_dir}/{space}/{label}.npz",
    "figure": "{ds}/figures/{name}.{ext}",
    "paper_table": "{ds}/paper/metrics_table.{ext}",
    "scaling": "{ds}/scaling/{model}",
    "scaling_record": "{scaling}/k{k}/job{slot}.json",
    "scaling_done": "{scaling}/k{k}/done",
    "scaling_summary": "{scaling}/summary.csv",
    "scaling_jobs": "{scaling}/jobs.csv",
    "scaling_scratch": "{scaling}/scratch/k{k}/{slot}",
    "benchmark": "{ds}/benchmarks/{job}.tsv",
    "tensorboard": "{logs}/tensorboard",  # runtime.tensorboard: one run folder per <model>/<label> below it
    "log": "{logs}/{job}.log",
}


class _Wildcards(dict):
    def __missing__(self, key: str) -> str:
        return "{" + key + "}"  # left for Snakemake to fill


def layout(kind: str, **fields) -> str:
    """LAYOUT[kind] with `fields` filled in (a field that names another template, not given, is that
    template filled the same way); fields not given stay as `{name}` wildcards."""
    template = LAYOUT[kind]
    for name in re.findall(r"\{(\w+)\}", template):
        if name in LAYOUT and name not in fields:
            fields[name] = layout(name, **fields)
    return template.format_map(
        _Wildcards({k: v.as_posix() if hasattr(v, "as_posix") else v for k, v in fields.items()})
    )


def model_files(model: str, labels) -> list:
    """What a model's generator, log and snapshot files are named by (LAYOUT's {label}): its labels,
    or the one name of a conditional model's files."""
    return models.file_names(model, labels)


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
            raise LabelwiseError(
                f"config key data.labels: {bad} do not exist in {data['source']} (labels are 0..{n - 1})"
            )
    return labels, labels if data["source"] == "imagefolder" else list(range(n))


def train_settings(config: dict, model: str, n_labels: int, budget: dict | None = None) -> dict:
    """Everything that shapes one model's training: its section, the budget and the seed.  The
    single conditional GAN gets the sum of the per-label jobs' budgets (the papers' comparison).
    `budget`: this one instead of config's (the scaling study's short fixed budget), as given."""
    if budget is not None:
        return {"model": config["models"][model], "budget": budget, "seed": config["seed"]}
    budget = dict(config["budget"])
    if not budget.get("snapshots"):
        budget.pop("snapshots", None)  # no snapshots: the same params (no rerun) as before the key existed
    if budget.get("gflop") is None:
        budget.pop("gflop", None)  # no compute budget: likewise
    if models.get(model).conditional:
        budget["iterations"] *= n_labels
        if budget["minutes"]:
            budget["minutes"] *= n_labels
        if budget.get("gflop"):
            budget["gflop"] *= n_labels
    return {"model": config["models"][model], "budget": budget, "seed": config["seed"]}


# The largest pack an allocation is filled with (runtime.labels_per_job): issue 11's H200 figures
# saturate there (docs/benchmarks.md); a config's own labels_per_job is the bound when smaller.
def allocation_labels_per_job(
    labels_per_job: int, gpus: int, n_labels: int, per_label_models: int, conditional_models: int
) -> int:
    """Labels per training job in an allocation of `gpus` GPUs: the largest K <= labels_per_job that still
    gives every GPU a training job at once (per_label_models x ceil(n_labels / K) + conditional_models
    >= gpus), else 1 (fewer jobs than GPUs even one label per job).  Larger packs train more
    label-iterations per second per GPU (docs/benchmarks.md), so among the K that fill the allocation
    the largest is taken."""
    for k in range(max(1, labels_per_job), 0, -1):
        if per_label_models * -(-n_labels // k) + conditional_models >= gpus:
            return k
    return 1


def paper_table_caption(config: dict, n_labels: int) -> str:
    """The table's caption: the dataset, the configured models (only those), labels, samples, budget."""
    names = [models.title(m) for m in ordered_models(config["models"])]
    listed = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
    return (
        f"{dataset_name(config)}: {listed}, {n_labels} labels, "
        f"{config['evaluation']['samples_per_label']} samples per label, budget " + budget_text(config["budget"])
    )


def budget_text(budget: dict) -> str:
    """The training budget in words: equal counted compute (budget.gflop) or equal iterations."""
    text = f"{budget['iterations']} generator iterations per label"
    if budget.get("gflop"):
        text = f"{budget['gflop']:g} counted GFLOP per label (equal compute; at most {text})"
    if budget.get("minutes"):
        text += f", at most {budget['minutes']:g} minutes"
    return text
