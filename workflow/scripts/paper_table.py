"""Snakemake entry point of rule paper_table: every model's metrics.json -> CSV, Markdown, LaTeX table."""
from labelwise.cli import snakemake_entry
from labelwise.tables import write_tables


def table(smk):
    write_tables(smk.input.metrics, smk.output.csv, smk.output.md, smk.output.tex, caption=smk.params.caption)


snakemake_entry(snakemake, table)  # noqa: F821 (injected by Snakemake)
