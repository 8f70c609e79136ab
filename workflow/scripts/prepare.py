"""Snakemake entry point of rule prepare (rules/data.smk): raw dataset -> shards + meta.json."""
from labelwise.cli import snakemake_entry
from labelwise.data import prepare_dataset


def prepare(smk):
    d = smk.params.data
    prepare_dataset(d["source"], smk.params.out_dir, root=d["root"], labels=d.get("labels"),
                    resolution=d.get("resolution", 64), download=d["download"], name=smk.params.name)


snakemake_entry(snakemake, prepare)  # noqa: F821 (injected by Snakemake)
