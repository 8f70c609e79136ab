"""Snakemake entry point of rule prepare (rules/data.smk): raw dataset -> shards + meta.json; for an
image folder, meta.json from the shards that the prepare_label jobs wrote."""
from labelwise.cli import snakemake_entry
from labelwise.data import assemble_meta, prepare_dataset


def prepare(smk):
    d = smk.params.data
    if d["source"] == "imagefolder":
        assemble_meta(smk.params.out_dir, d["root"], d["labels"], resolution=d["resolution"],
                      jpeg_draft=d["jpeg_draft"], name=smk.params.name)
    else:
        prepare_dataset(d["source"], smk.params.out_dir, root=d["root"], download=d["download"], name=smk.params.name)


snakemake_entry(snakemake, prepare, torch=False)  # noqa: F821 (injected by Snakemake)
