"""Snakemake entry point of rule fid_vs_time_figure: every model's fid_vs_time.json -> one figure."""
from labelwise.cli import snakemake_entry
from labelwise.plots import fid_vs_time


def figure(smk):
    fid_vs_time(smk.input.runs, [smk.output.png, smk.output.pdf], dpi=smk.params.figures["dpi"],
                title=f"FID against training time, {smk.params.dataset}")


snakemake_entry(snakemake, figure)  # noqa: F821 (injected by Snakemake)
