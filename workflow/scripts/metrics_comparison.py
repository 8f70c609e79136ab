"""Snakemake entry point of rule metrics_comparison: every model's metrics.json -> one figure."""
from labelwise.cli import snakemake_entry
from labelwise.plots import metrics_comparison


def compare(smk):
    metrics_comparison(smk.input.metrics, [smk.output.png, smk.output.pdf], dpi=smk.params.figures["dpi"],
                       title=f"Models compared, {smk.params.dataset}")


snakemake_entry(snakemake, compare)  # noqa: F821 (injected by Snakemake)
