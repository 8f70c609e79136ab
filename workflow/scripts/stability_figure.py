"""Snakemake entry point of rule stability_figure: every model's fid_vs_time.json -> one figure."""
from labelwise.cli import snakemake_entry
from labelwise.plots import stability_figure


def figure(smk):
    stability_figure({smk.params.dataset: smk.input.runs}, [smk.output.png, smk.output.pdf],
                     dpi=smk.params.figures["dpi"], title="Stability along training")


snakemake_entry(snakemake, figure)  # noqa: F821 (injected by Snakemake)
