# labelwise: one small GAN per class label, trained independently, then sampled and plotted.
# Stages, one direction: prepare (shards) -> train (one job per model x label) -> sample ->
# evaluate (classifier, real statistics, metrics) -> figures.
# Usage: `make run` (or `snakemake --profile profiles/local`); configuration in config.yaml.
from snakemake.utils import min_version

min_version("9.0")


configfile: "config.yaml"


include: "rules/common.smk"
include: "rules/data.smk"
include: "rules/train.smk"
include: "rules/evaluate.smk"
include: "rules/scaling.smk"  # before figures.smk: `rule paper` takes scaling_outputs()
include: "rules/figures.smk"


rule all:
    input:
        all_outputs(),
    default_target: True
