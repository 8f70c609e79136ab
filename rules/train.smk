# One training job per {model} x {label}: the label's shard in, its generator and log CSV out.
# Checkpoints live in a directory that is a param, not an output: Snakemake deletes a failed job's
# outputs, and the checkpoints are what a rerun resumes from.
# With budget.snapshots, each job also writes its snapshot bundle (the command is unchanged without).
# With runtime.labels_per_job K > 1, one job per model and pack of K labels instead (rules
# train_labels_<first>_<last>): the same files per label, written by one packed process.
# The command: train_shell (rules/common.smk).


if LABELS_PER_JOB == 1:

    rule train:
        input:
            shard=path("shard"),
            meta=META,
        output:
            **({"snapshots": path("snapshots")} if SNAPSHOTS else {}),
            generator=path("generator"),
            log=path("train_log"),
            # Only with budget.snapshots: the snapshots themselves stay in the checkpoint directory.
        log:
            path("log", job="train/{model}/{label}"),
        benchmark:
            path("benchmark", job="train/{model}/{label}")
        conda:
            "../envs/train.yaml"
        threads: config["runtime"]["threads"]
        resources:
            runtime=train_runtime_minutes(),
            gpu=train_gpus,
        params:
            **PRECISION_PARAM,
            settings=train_settings,
            checkpoints=lambda w: path("checkpoints", model=w.model, label=w.label),
        # A shell rule (not script:) so that allocation mode can put the site launcher in front of it.
        shell:
            train_shell("{wildcards.label}", "{input.shard:q}", "{output.generator:q}", "{output.log:q}")

else:
    for pack in label_packs(LABELS, LABELS_PER_JOB):

        rule:
            name:
                pack_rule_name(pack)
            input:
                shards=[path("shard", label=k) for k in pack],
                meta=META,
            output:
                **({"snapshots": [path("snapshots", label=k) for k in pack]} if SNAPSHOTS else {}),
                generators=[path("generator", label=k) for k in pack],
                logs=[path("train_log", label=k) for k in pack],
            log:
                path("log", job=f"train/{{model}}/labels_{pack[0]}-{pack[-1]}"),
            benchmark:
                path("benchmark", job=f"train/{{model}}/labels_{pack[0]}-{pack[-1]}")
            conda:
                "../envs/train.yaml"
            threads: config["runtime"]["threads"]
            resources:
                runtime=train_runtime_minutes(len(pack)),
                gpu=train_gpus,
            params:
                **PRECISION_PARAM,
                settings=train_settings,
                labels=pack,
                checkpoints=lambda w, pack=pack: [path("checkpoints", model=w.model, label=k) for k in pack],
            shell:
                train_shell("{params.labels:q}", "{input.shards:q}", "{output.generators:q}", "{output.logs:q}")


# A conditional model: one job trains its one network on every selected label's shard.
for conditional_model in CONDITIONAL_MODELS:

    rule:
        name:
            f"train_{conditional_model}"
        input:
            shards=expand(path("shard"), label=LABELS),
            meta=META,
        output:
            **(
                {"snapshots": path("snapshots", model=conditional_model, label=labelwise.models.ALL)}
                if SNAPSHOTS
                else {}
            ),
            generator=path("generator", model=conditional_model, label=labelwise.models.ALL),
            log=path("train_log", model=conditional_model, label=labelwise.models.ALL),
        log:
            path("log", job=f"train/{conditional_model}/{labelwise.models.ALL}"),
        benchmark:
            path("benchmark", job=f"train/{conditional_model}/{labelwise.models.ALL}")
        conda:
            "../envs/train.yaml"
        threads: config["runtime"]["threads"]
        resources:
            runtime=lambda w, model=conditional_model: model_runtime_minutes(model),
            gpu=train_gpus,
        params:
            **PRECISION_PARAM,
            settings=lambda w, model=conditional_model: model_train_settings(model),
            checkpoints=path("checkpoints", model=conditional_model, label=labelwise.models.ALL),
            # The model through params, not the loop variable: Snakemake evaluates a shell directive's
            # expression again when the job runs, when `conditional_model` is the loop's last value.
            model=conditional_model,
        shell:
            train_shell(None, "{input.shards:q}", "{output.generator:q}", "{output.log:q}", model="{params.model:q}")


# Sampling: one job per model and label (its generator in, its samples out), so that a label added
# to a finished run is the only one sampled again. Each draws from the label's own noise stream
# (labelwise.seeds), so the samples do not depend on how the jobs are cut. On a cluster these
# seconds-long jobs are bundled into few submissions (profiles/slurm: docs/clusters.md).
rule sample:
    input:
        generator=lambda w: generator_of(w.model, int(w.label)),
        meta=META,
    output:
        samples=path("samples"),
    log:
        path("log", job="sample/{model}/{label}"),
    conda:
        "../envs/train.yaml"
    threads: config["runtime"]["threads"]
    resources:
        gpu=evaluation_gpus,
        runtime=evaluation_runtime("sample", lambda w: {"generator": EVALUATION["samples_per_label"]}, per_label=True),
    params:
        n=config["evaluation"]["samples_per_label"],
        batch_size=config["evaluation"]["batch_size"],
        seed=config["seed"],
    script:
        "../workflow/scripts/sample.py"
