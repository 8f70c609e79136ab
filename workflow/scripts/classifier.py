"""Snakemake entry point of rule classifier (rules/evaluate.smk): real shards -> label classifier."""
from labelwise.cli import snakemake_entry
from labelwise.metrics.classifier import train_classifier


def classifier(smk):
    shards = dict(zip(smk.params.labels, smk.input.shards))
    train_classifier(shards, smk.output.weights, epochs=smk.params.epochs, seed=smk.params.seed,
                     device=smk.config["runtime"]["device"])


snakemake_entry(snakemake, classifier)  # noqa: F821 (injected by Snakemake)
