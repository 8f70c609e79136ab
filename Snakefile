# labelwise: one small GAN per class label, trained independently, then sampled and plotted.
# Stages, one direction: prepare (shards) -> train (one job per model x label) -> sample ->
# evaluate (classifier, real statistics, metrics) -> figures.
# Usage: `make run` (or `snakemake --profile profiles/local`); configuration in config.yaml.
import os

from snakemake.utils import min_version

min_version("9.0")


# One composition rule (README "Configuration"; `labelwise <stage> --config` follows it too): the
# schema's defaults, then each --configfile in order, then --config. config.yaml is the file only
# when no --configfile is given, so a preset is a whole configuration, never laid over the CPU demo.
if not workflow.overwrite_configfiles:

    configfile: "config.yaml"


# `--sdm apptainer`: every job runs in this image, built from container/labelwise.def
# (docs/environments.md); LABELWISE_CONTAINER names another image file or URI.
container: os.environ.get("LABELWISE_CONTAINER", "labelwise.sif")


include: "rules/common.smk"
include: "rules/data.smk"
include: "rules/train.smk"
include: "rules/evaluate.smk"
include: "rules/scaling.smk"
include: "rules/figures.smk"


rule all:
    default_target: True
    input:
        all_outputs(),
