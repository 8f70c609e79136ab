"""Snakemake entry point of rule sample_grid (rules/figures.smk): samples -> grid PNG + PDF."""
from labelwise.cli import snakemake_entry
from labelwise.plots import MODEL_TITLES, sample_grid


def grid(smk):
    model = smk.wildcards.model
    sample_grid(smk.input.samples, [smk.output.png, smk.output.pdf], columns=smk.params.figures["grid_columns"],
                dpi=smk.params.figures["dpi"], title=f"{MODEL_TITLES.get(model, model)} samples, {smk.params.dataset}")


snakemake_entry(snakemake, grid)  # noqa: F821 (injected by Snakemake)
