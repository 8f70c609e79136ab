"""Snakemake entry point of rule real_stats: every selected label's real images -> feature statistics
(.npz per label) in one feature space, the space opened once."""
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
    for shard, out in zip(smk.input.shards, smk.output.stats):
        write_real_stats(shard, out, space)


snakemake_entry(snakemake, real_stats)  # noqa: F821 (injected by Snakemake)
