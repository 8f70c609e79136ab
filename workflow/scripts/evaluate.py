"""Snakemake entry point of rule evaluate: one model's samples -> metrics.json + per-label CSV."""
from labelwise.cli import snakemake_entry
from labelwise.metrics import evaluate_model, write_metrics


def evaluate(smk):
    labels = smk.params.labels
    n = len(labels)
    metrics = evaluate_model(
        smk.wildcards.model,
        dict(zip(labels, smk.input.samples[:n])),
        dict(zip(labels, smk.input.shards)),
        stats_dir=smk.params.stats_dir,
        classifier_path=smk.input.classifier,
        settings=smk.params.evaluation,
        device=smk.config["runtime"]["device"],
    )
    write_metrics(metrics, smk.output.metrics, smk.output.table)


snakemake_entry(snakemake, evaluate)  # noqa: F821 (injected by Snakemake)
