"""Snakemake entry point of rule sample (rules/train.smk): one label's generator -> its samples HDF5."""
import json

from labelwise.cli import snakemake_entry
from labelwise.sample import sample_label


def sample(smk):
    label = int(smk.wildcards.label)
    class_names = json.loads(open(smk.input.meta).read())["class_names"]
    runtime = smk.config["runtime"]  # how to run, not what to compute: deliberately not a param
    sample_label(smk.input.generator, smk.output.samples, smk.params.n, smk.params.seed, label=label,
                 class_name=class_names[label], device=runtime["device"], threads=smk.threads,
                 batch_size=smk.params.batch_size)


snakemake_entry(snakemake, sample)  # noqa: F821 (injected by Snakemake)
