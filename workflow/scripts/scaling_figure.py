"""Snakemake entry point of rule scaling_figure: summary.csv -> the weak-scaling figure, PNG + PDF."""
from labelwise import models
from labelwise.cli import snakemake_entry
from labelwise.scaling import read_summary, scaling_figure


def figure(smk):
    p = smk.params
    title = (f"Weak scaling: {models.title(p.model)}, {p.dataset}, "
             f"{p.iterations} generator iterations per label")
    scaling_figure(read_summary(smk.input.summary), [smk.output.png, smk.output.pdf], title=title, dpi=p.figures["dpi"])


snakemake_entry(snakemake, figure)  # noqa: F821 (injected by Snakemake)
