"""Snakemake entry point of rule snapshot_metrics: one model's snapshot bundles (and, for the curve's end,
its metrics.json and training logs) -> fid_vs_time.json + CSV."""
import json

from labelwise import models
from labelwise.cli import snakemake_entry
from labelwise.metrics.snapshots import add_end_of_training, snapshot_metrics, write_snapshot_metrics


def evaluate(smk):
    labels = smk.params.labels
    bundles = list(smk.input.bundles)
    if models.get(smk.wildcards.model).conditional:
        bundles = bundles[:1] * len(labels)  # the one conditional model, bound to each label in turn
    evaluation = smk.params.evaluation
    result = snapshot_metrics(
        smk.wildcards.model,
        dict(zip(labels, bundles)),
        dict(zip(labels, smk.input.shards)),
        stats_dir=smk.params.stats_dir,
        classifier_path=smk.input.classifier,
        samples_per_label=evaluation["samples_per_label"],
        seed=smk.params.seed,
        settings=evaluation,
        device=smk.config["runtime"]["device"],  # how to run, not what to compute: not a param
        batch_size=evaluation["batch_size"],
    )
    with open(smk.input.metrics) as f:
        add_end_of_training(result, json.load(f), smk.input.logs, where=smk.input.metrics)
    write_snapshot_metrics(result, smk.output.json, smk.output.csv)


snakemake_entry(snakemake, evaluate)  # noqa: F821 (injected by Snakemake)
