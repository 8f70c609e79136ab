"""Snakemake entry point of rule sample_grid (rules/figures.smk): samples -> grid PNG + PDF."""
from labelwise import models
from labelwise.cli import snakemake_entry
from labelwise.plots import sample_grid


def grid(smk):
    model = smk.wildcards.model
    sample_grid(smk.input.samples, [smk.output.png, smk.output.pdf], columns=smk.params.figures["grid_columns"],
                dpi=smk.params.figures["dpi"], title=f"{models.title(model)} samples, {smk.params.dataset}")


snakemake_entry(snakemake, grid)  # noqa: F821 (injected by Snakemake)
