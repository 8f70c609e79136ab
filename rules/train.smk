# One training job per {model} x {label}: the label's shard in, its generator and log CSV out.
# Checkpoints live in a directory that is a param, not an output: Snakemake deletes a failed job's
# outputs, and the checkpoints are what a rerun resumes from.


rule train:
    input:
        shard=f"{DS}/shards/{{label}}.h5",
    output:
        generator=f"{DS}/{{model}}/generators/{{label}}.pt",
        log=f"{DS}/{{model}}/train_logs/{{label}}.csv",
    params:
        settings=train_settings,
        checkpoints=lambda w: f"{DS}/{w.model}/checkpoints/{w.label}",
    threads: config["runtime"]["threads"]
    resources:
        runtime=train_runtime_minutes,
    log:
        f"logs/{DATASET}/train/{{model}}/{{label}}.log",
    benchmark:
        f"{DS}/benchmarks/train/{{model}}/{{label}}.tsv"
    conda:
        "../envs/train.yaml"
    # A shell rule (not script:) so that allocation mode can put the site launcher in front of it.
    shell:
        "{LAUNCHER} labelwise train --model {wildcards.model} --label {wildcards.label}"
        " --settings {params.settings:q} --shard {input.shard}"
        " --generator {output.generator} --log {output.log} --checkpoints {params.checkpoints:q}"
        " --device {config[runtime][device]} --threads {threads}"
        " --progress-seconds {config[runtime][progress_seconds]} 2> {log:q}"


rule sample:
    input:
        generator=rules.train.output.generator,
        meta=f"{DS}/meta.json",
    output:
        samples=f"{DS}/{{model}}/samples/{{label}}.h5",
    params:
        n=config["evaluation"]["samples_per_label"],
        batch_size=config["evaluation"]["batch_size"],
        seed=config["seed"],
    log:
        f"logs/{DATASET}/sample/{{model}}/{{label}}.log",
    conda:
        "../envs/train.yaml"
    script:
        "../workflow/scripts/sample.py"
