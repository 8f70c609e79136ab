"""Snakemake entry point of rule training_curves: one model's training logs -> curves PNG + PDF."""
from labelwise import models
from labelwise.cli import snakemake_entry
from labelwise.plots import training_curves


def curves(smk):
    model = smk.wildcards.model
    training_curves(smk.input.logs, [smk.output.png, smk.output.pdf], dpi=smk.params.figures["dpi"],
                    title=f"{models.title(model)} training, {smk.params.dataset}")


snakemake_entry(snakemake, curves)  # noqa: F821 (injected by Snakemake)
