# Evaluation: a label classifier trained once per dataset, real-image feature statistics computed
# once per feature space x label (reused by every model and rerun), then per-model metrics.
# Only `evaluation.*` reaches these rules, so changing it never retrains a generator.


rule classifier:
    input:
        shards=expand(f"{DS}/shards/{{label}}.h5", label=SHARDED_LABELS),
        meta=META,
    output:
        weights=f"{DS}/classifier/classifier.pt",
        summary=f"{DS}/classifier/classifier.json",
    params:
        labels=SHARDED_LABELS,
        epochs=config["evaluation"]["classifier_epochs"],
        seed=config["seed"],
    threads: config["runtime"]["threads"]
    log:
        f"logs/{DATASET}/classifier.log",
    benchmark:
        f"{DS}/benchmarks/classifier.tsv"
    conda:
        "../envs/evaluate.yaml"
    script:
        "../workflow/scripts/classifier.py"


rule real_stats:
    input:
        unpack(real_stats_inputs),
    output:
        stats=f"{DS}/stats/{{space}}/{{label}}.npz",
    params:
        inception=inception_params,
    threads: config["runtime"]["threads"]
    log:
        f"logs/{DATASET}/stats/{{space}}/{{label}}.log",
    benchmark:
        f"{DS}/benchmarks/stats/{{space}}/{{label}}.tsv"
    conda:
        "../envs/evaluate.yaml"
    script:
        "../workflow/scripts/real_stats.py"


rule evaluate:
    input:
        samples=lambda w: samples_of(w.model),
        shards=expand(f"{DS}/shards/{{label}}.h5", label=LABELS),
        stats=expand(f"{DS}/stats/{{space}}/{{label}}.npz", space=SPACES, label=LABELS),
        classifier=f"{DS}/classifier/classifier.pt",
    output:
        metrics=f"{DS}/{{model}}/metrics.json",
        table=report(
            f"{DS}/{{model}}/metrics.csv",
            category="Metrics",
            subcategory="{model}",
            caption="../workflow/report/metrics_table.rst",
        ),
    params:
        evaluation=config["evaluation"],
        labels=LABELS,
        stats_dir=f"{DS}/stats",
    threads: config["runtime"]["threads"]
    log:
        f"logs/{DATASET}/evaluate/{{model}}.log",
    benchmark:
        f"{DS}/benchmarks/evaluate/{{model}}.tsv"
    conda:
        "../envs/evaluate.yaml"
    script:
        "../workflow/scripts/evaluate.py"


# FID along training (budget.snapshots): every snapshot point of one model, per label, against the
# same real statistics, and the final generators' FIDs (metrics.json) where training ended;
# requested by `paper` only when budget.snapshots is set.
rule snapshot_metrics:
    input:
        bundles=lambda w: snapshot_bundles_of(w.model),
        metrics=f"{DS}/{{model}}/metrics.json",  # the curve's end: the final generators' FIDs
        logs=lambda w: train_logs_of(w.model),
        shards=expand(f"{DS}/shards/{{label}}.h5", label=LABELS),
        stats=expand(f"{DS}/stats/{{space}}/{{label}}.npz", space=SPACES, label=LABELS),
        classifier=f"{DS}/classifier/classifier.pt",
    output:
        json=f"{DS}/{{model}}/fid_vs_time.json",
        csv=f"{DS}/{{model}}/fid_vs_time.csv",
    params:
        evaluation=config["evaluation"],
        labels=LABELS,
        seed=config["seed"],
        stats_dir=f"{DS}/stats",
    threads: config["runtime"]["threads"]
    log:
        f"logs/{DATASET}/evaluate/fid_vs_time_{{model}}.log",
    benchmark:
        f"{DS}/benchmarks/evaluate/fid_vs_time_{{model}}.tsv"
    conda:
        "../envs/evaluate.yaml"
    script:
        "../workflow/scripts/snapshot_metrics.py"
