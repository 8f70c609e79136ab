# One training job per {model} x {label}: the label's shard in, its generator and log CSV out.
# Checkpoints live in a directory that is a param, not an output: Snakemake deletes a failed job's
# outputs, and the checkpoints are what a rerun resumes from.
# With budget.snapshots, each job also writes its snapshot bundle (the command is unchanged without).
# With runtime.labels_per_job K > 1, one job per model and pack of K labels instead (rules
# train_labels_<first>_<last>): the same files per label, written by one packed process.
SNAPSHOTS_ARG = " --snapshots {output.snapshots:q}" if SNAPSHOTS else ""
LABELS_PER_JOB = config["runtime"]["labels_per_job"]
CHANNELS_LAST_ARG = " --channels-last" if config["runtime"]["channels_last"] else ""
# runtime.precision changes what training computes: bf16 is a param of the train rules (switching
# retrains); fp32, the default, adds none, so results trained before the setting existed stay valid.
PRECISION_PARAM = {"precision": "bf16"} if config["runtime"]["precision"] == "bf16" else {}
TRAIN_RUNTIME_ARGS = (
    " --device {config[runtime][device]} --threads {threads}"
    " --progress-seconds {config[runtime][progress_seconds]}" + CHANNELS_LAST_ARG
    + " --packed-kernel {config[runtime][packed_kernel]} --cuda-graph {config[runtime][cuda_graph]}"
    + (" --precision bf16" if PRECISION_PARAM else "")
)


if LABELS_PER_JOB == 1:
    rule train:
        input:
            shard=f"{DS}/shards/{{label}}.h5",
            meta=META,
        output:
            generator=f"{DS}/{{model}}/generators/{{label}}.pt",
            log=f"{DS}/{{model}}/train_logs/{{label}}.csv",
            # Only with budget.snapshots: the snapshots themselves stay in the checkpoint directory.
            **({"snapshots": f"{DS}/{{model}}/snapshots/{{label}}.pt"} if SNAPSHOTS else {}),
        params:
            settings=train_settings,
            checkpoints=lambda w: f"{DS}/{w.model}/checkpoints/{w.label}",
            **PRECISION_PARAM,
        threads: config["runtime"]["threads"]
        resources:
            runtime=train_runtime_minutes,
            gpu=train_gpus,
        log:
            f"logs/{DATASET}/train/{{model}}/{{label}}.log",
        benchmark:
            f"{DS}/benchmarks/train/{{model}}/{{label}}.tsv"
        conda:
            "../envs/train.yaml"
        # A shell rule (not script:) so that allocation mode can put the site launcher in front of it.
        shell:
            "{LAUNCHER} labelwise train --model {wildcards.model} --label {wildcards.label}"
            " --settings {params.settings:q} --shard {input.shard:q}"
            " --generator {output.generator:q} --log {output.log:q} --checkpoints {params.checkpoints:q}"
            + TRAIN_RUNTIME_ARGS + SNAPSHOTS_ARG + " 2> {log:q}"

else:
    for pack in label_packs(LABELS, LABELS_PER_JOB):
        pack_rule = f"train_labels_{pack[0]}_{pack[-1]}"
        inherit_profile_settings(pack_rule, "train")  # a profile's `train:` threads and resources

        rule:
            name:
                pack_rule
            input:
                shards=[f"{DS}/shards/{k}.h5" for k in pack],
                meta=META,
            output:
                generators=[f"{DS}/{{model}}/generators/{k}.pt" for k in pack],
                logs=[f"{DS}/{{model}}/train_logs/{k}.csv" for k in pack],
                **({"snapshots": [f"{DS}/{{model}}/snapshots/{k}.pt" for k in pack]} if SNAPSHOTS else {}),
            params:
                settings=train_settings,
                labels=pack,
                checkpoints=lambda w, pack=pack: [f"{DS}/{w.model}/checkpoints/{k}" for k in pack],
                **PRECISION_PARAM,
            threads: config["runtime"]["threads"]
            resources:
                runtime=train_runtime_minutes,
                gpu=train_gpus,
            log:
                f"logs/{DATASET}/train/{{model}}/labels_{pack[0]}-{pack[-1]}.log",
            benchmark:
                f"{DS}/benchmarks/train/{{model}}/labels_{pack[0]}-{pack[-1]}.tsv"
            conda:
                "../envs/train.yaml"
            shell:
                "{LAUNCHER} labelwise train --model {wildcards.model} --label {params.labels:q}"
                " --settings {params.settings:q} --shard {input.shards:q}"
                " --generator {output.generators:q} --log {output.logs:q} --checkpoints {params.checkpoints:q}"
                + TRAIN_RUNTIME_ARGS + SNAPSHOTS_ARG + " 2> {log:q}"


rule train_cgan:
    input:
        shards=expand(f"{DS}/shards/{{label}}.h5", label=LABELS),
        meta=META,
    output:
        generator=f"{DS}/cgan/generators/all.pt",
        log=f"{DS}/cgan/train_logs/all.csv",
        **({"snapshots": f"{DS}/cgan/snapshots/all.pt"} if SNAPSHOTS else {}),
    params:
        settings=lambda w: model_train_settings("cgan"),
        checkpoints=f"{DS}/cgan/checkpoints/all",
        **PRECISION_PARAM,
    threads: config["runtime"]["threads"]
    resources:
        runtime=lambda w: model_runtime_minutes("cgan"),
        gpu=train_gpus,
    log:
        f"logs/{DATASET}/train/cgan/all.log",
    benchmark:
        f"{DS}/benchmarks/train/cgan/all.tsv"
    conda:
        "../envs/train.yaml"
    shell:
        "{LAUNCHER} labelwise train --model cgan"
        " --settings {params.settings:q} --shard {input.shards:q}"
        " --generator {output.generator:q} --log {output.log:q} --checkpoints {params.checkpoints:q}"
        + TRAIN_RUNTIME_ARGS + SNAPSHOTS_ARG + " 2> {log:q}"


# One sampling job per model for all its labels: seconds of work on a GPU, so not a job per label.
rule sample:
    input:
        generators=lambda w: [generator_of(w.model, k) for k in LABELS],
        meta=META,
    output:
        samples=expand(f"{DS}/{{{{model}}}}/samples/{{label}}.h5", label=LABELS),
    params:
        labels=LABELS,
        n=config["evaluation"]["samples_per_label"],
        batch_size=config["evaluation"]["batch_size"],
        seed=config["seed"],
    threads: config["runtime"]["threads"]
    resources:
        gpu=evaluation_gpus,
        runtime=evaluation_runtime("sample", lambda w: {"generator": N_GENERATED}),
    log:
        f"logs/{DATASET}/sample/{{model}}.log",
    conda:
        "../envs/train.yaml"
    script:
        "../workflow/scripts/sample.py"
