# Evaluation: a label classifier trained once per dataset, real-image feature statistics computed
# once per feature space and label (reused by every model and rerun), then per-model metrics.
# Only `evaluation.*` reaches these rules, so changing it never retrains a generator.
# On a cluster each is one job on one GPU when runtime.device asks for CUDA (or a profile gives the
# rule a GPU), with a wall time from the images it processes (labelwise.walltime). The per-label
# jobs (real_stats, and sample in rules/train.smk) are bundled on a cluster (docs/clusters.md).


rule classifier:
    input:
        shards=expand(path("shard"), label=SHARDED_LABELS),
        meta=META,
    output:
        weights=path("classifier"),
        summary=path("classifier_summary"),
    log:
        path("log", job="classifier"),
    benchmark:
        path("benchmark", job="classifier")
    conda:
        "../envs/evaluate.yaml"
    threads: config["runtime"]["threads"]
    resources:
        gpu=evaluation_gpus,
        # forward and backward passes: about three forward passes per image and epoch
        runtime=evaluation_runtime(
            "classifier",
            lambda w: {"classifier": 3 * EVALUATION["classifier_epochs"] * len(SHARDED_LABELS) * REAL_PER_LABEL},
        ),
    params:
        labels=SHARDED_LABELS,
        epochs=config["evaluation"]["classifier_epochs"],
        seed=config["seed"],
    script:
        "../workflow/scripts/classifier.py"


# One job per feature space and label: a label added to a finished run is the only one computed.
rule real_stats:
    input:
        unpack(real_stats_inputs),
    output:
        stats=path("stats"),
    log:
        path("log", job="stats/{space}/{label}"),
    benchmark:
        path("benchmark", job="stats/{space}/{label}")
    conda:
        "../envs/evaluate.yaml"
    threads: config["runtime"]["threads"]
    resources:
        gpu=evaluation_gpus,
        runtime=evaluation_runtime("real_stats", lambda w: {w.space: REAL_PER_LABEL}, per_label=True),
    params:
        inception=inception_params,
    script:
        "../workflow/scripts/real_stats.py"


rule evaluate:
    input:
        samples=lambda w: samples_of(w.model),
        shards=expand(path("shard"), label=LABELS),
        stats=expand(path("stats"), space=SPACES, label=LABELS),
        classifier=path("classifier"),
    output:
        metrics=path("metrics"),
        table=report(
            path("metrics_table"),
            category="Metrics",
            subcategory="{model}",
            caption="../workflow/report/metrics_table.rst",
        ),
    log:
        path("log", job="evaluate/{model}"),
    benchmark:
        path("benchmark", job="evaluate/{model}")
    conda:
        "../envs/evaluate.yaml"
    threads: config["runtime"]["threads"]
    resources:
        gpu=evaluation_gpus,
        runtime=evaluation_runtime("evaluate", lambda w: {space: N_GENERATED for space in SPACES}),
    params:
        evaluation=config["evaluation"],
        labels=LABELS,
        stats_dir=path("stats_dir"),
    script:
        "../workflow/scripts/evaluate.py"


# FID along training (budget.snapshots): every snapshot point of one model, per label, against the
# same real statistics, and the final generators' FIDs (metrics.json) where training ended;
# requested by `paper` only when budget.snapshots is set.
rule snapshot_metrics:
    input:
        bundles=lambda w: snapshot_bundles_of(w.model),
        metrics=path("metrics"),  # the curve's end: the final generators' FIDs
        logs=lambda w: train_logs_of(w.model),
        shards=expand(path("shard"), label=LABELS),
        stats=expand(path("stats"), space=SPACES, label=LABELS),
        classifier=path("classifier"),
    output:
        json=path("fid_vs_time", ext="json"),
        csv=path("fid_vs_time", ext="csv"),
    log:
        path("log", job="evaluate/fid_vs_time_{model}"),
    benchmark:
        path("benchmark", job="evaluate/fid_vs_time_{model}")
    conda:
        "../envs/evaluate.yaml"
    threads: config["runtime"]["threads"]
    resources:
        gpu=evaluation_gpus,
        # every snapshot: its samples drawn, then put through each feature space
        runtime=evaluation_runtime(
            "snapshot_metrics",
            lambda w: {net: len(SNAPSHOTS) * N_GENERATED for net in ("generator", *SPACES)},
        ),
    params:
        evaluation=config["evaluation"],
        labels=LABELS,
        seed=config["seed"],
        stats_dir=path("stats_dir"),
    script:
        "../workflow/scripts/snapshot_metrics.py"
