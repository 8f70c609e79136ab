"""Snakemake entry point of rule real_stats: one label's real images -> its feature statistics (.npz)
in one feature space."""
from labelwise.cli import snakemake_entry
from labelwise.metrics.realstats import write_real_stats


def real_stats(smk):
    device = smk.config["runtime"]["device"]
    if smk.wildcards.space == "classifier":
        from labelwise.metrics.classifier import ClassifierSpace

        space = ClassifierSpace(smk.input.classifier, device=device)
    else:
        from labelwise.metrics.inception import InceptionSpace

        p = smk.params.inception
        space, _ = InceptionSpace.from_settings("required", p["inception_weights"], device=device,
                                                batch_size=p["feature_batch_size"])
    write_real_stats(smk.input.shard, smk.output.stats, space)


snakemake_entry(snakemake, real_stats)  # noqa: F821 (injected by Snakemake)
