"""Snakemake entry point of rule prepare_label (rules/data.smk): one image-folder class -> its shard."""
from labelwise.cli import snakemake_entry
from labelwise.data import prepare_label


def prepare(smk):
    d = smk.params.data
    prepare_label(smk.params.out_dir, d["root"], int(smk.wildcards.label), resolution=d["resolution"],
                  threads=smk.threads, jpeg_draft=d["jpeg_draft"],
                  progress_seconds=smk.config["runtime"]["progress_seconds"])


snakemake_entry(snakemake, prepare, torch=False)  # noqa: F821 (injected by Snakemake)
