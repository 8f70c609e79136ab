# Weak scaling (the papers' scaling figure): for each k in scaling.ks, k labels trained at once with
# the same short fixed budget, one GPU (or core set) per label, and the time to solution (makespan)
# against k. Each label of each k is its own Snakemake job (rule scaling_train, like rule train:
# same launcher, threads and gpu resource), so a cluster profile places every one on its own GPU.
#
#   results/<dataset>/scaling/<model>/k<k>/job<slot>.json   one job's record (timestamps, host, GPU)
#   results/<dataset>/scaling/<model>/k<k>/done             the group barrier (see below)
#   results/<dataset>/scaling/<model>/summary.csv, jobs.csv one row per k / per job
#   results/<dataset>/figures/weak_scaling.png|pdf
#
# The groups run one after another, never interleaved (which would spoil every makespan): the jobs
# of group k depend on the barrier of the previous k in the list. Job `slot` of group k trains label
# LABELS[slot mod n] (n selected labels), so k may exceed n (ImageNet-1k: 1,000 labels, 2,048 GPUs).
# Not part of `rule all`; `snakemake paper` builds it (scaling_outputs()).

SCALING = config["scaling"]
SCALING_KS = sorted(SCALING["ks"])
SCALING_MODEL = SCALING["model"] or next(iter(PER_LABEL_MODELS), None)
SCALING_DIR = f"{DS}/scaling/{{model}}"
if SCALING_KS and SCALING["model"] is not None and SCALING["model"] not in PER_LABEL_MODELS:
    _config_error(
        f"config key scaling.model: {SCALING['model']!r} is not one of the configured per-label models "
        f"({', '.join(PER_LABEL_MODELS) or 'none'}); add it under models: or choose another"
    )


def scaling_outputs():
    """The weak-scaling figure (PNG, PDF); nothing when scaling.ks is empty or no per-label model is configured."""
    if not SCALING_KS or SCALING_MODEL is None:
        return []
    return expand(f"{DS}/figures/weak_scaling.{{ext}}", ext=("png", "pdf"))


def scaling_label(wildcards):
    return LABELS[int(wildcards.slot) % len(LABELS)]


def scaling_settings(wildcards):
    """The model's own settings with the scaling budget (iterations only, no minutes cap), as rule train's JSON."""
    budget = {
        "iterations": SCALING["iterations"],
        "minutes": None,
        "checkpoint_every": SCALING["checkpoint_every"] or config["budget"]["checkpoint_every"],
    }
    return json.dumps({"model": config["models"][wildcards.model], "budget": budget, "seed": config["seed"]}, sort_keys=True)


def scaling_train_inputs(wildcards):
    """The label's shard, and the barrier of the previous group: group k starts when that one is done."""
    k = int(wildcards.k)
    inputs = {"shard": f"{DS}/shards/{scaling_label(wildcards)}.h5", "meta": META}
    previous = [x for x in SCALING_KS if x < k]
    if previous:
        inputs["previous_group"] = f"{DS}/scaling/{wildcards.model}/k{max(previous)}/done"
    return inputs


def scaling_records(model, k):
    return expand(f"{DS}/scaling/{model}/k{k}/job{{slot}}.json", slot=range(int(k)))


rule scaling_train:
    input:
        unpack(scaling_train_inputs),
    output:
        record=f"{SCALING_DIR}/k{{k}}/job{{slot}}.json",
    params:
        label=scaling_label,
        settings=scaling_settings,
        # Scratch (not outputs): the generator, log and checkpoints of a timing run; nothing reads them.
        scratch=lambda w: f"{DS}/scaling/{w.model}/scratch/k{w.k}/{w.slot}",
    threads: config["runtime"]["threads"]
    resources:
        runtime=60,  # minutes (a short fixed budget); a profile may set its own
        gpu=train_gpus,
    wildcard_constraints:
        k=r"\d+",
        slot=r"\d+",
    log:
        f"logs/{DATASET}/scaling/{{model}}/k{{k}}/job{{slot}}.log",
    conda:
        "../envs/train.yaml"
    # As rule train: `labelwise train` behind the launcher, inside a wrapper that times it and writes
    # the record; `launched` is taken before the launcher, so step start-up counts in the makespan.
    shell:
        "launched=$(date +%s.%N); {LAUNCHER} python -m labelwise.scaling job --record {output.record:q}"
        " --k {wildcards.k} --slot {wildcards.slot} --launched $launched --"
        " --model {wildcards.model} --label {params.label:q} --settings {params.settings:q} --shard {input.shard:q}"
        " --generator {params.scratch:q}/generator.pt --log {params.scratch:q}/train_log.csv"
        " --checkpoints {params.scratch:q}/checkpoints" + TRAIN_RUNTIME_ARGS + " 2> {log:q}"


# The barrier of group k: a touched file once all its k jobs are done (a shell-less rule, so no code
# change ever reruns it and, through the chain, the larger groups).
rule scaling_group_done:
    input:
        lambda w: scaling_records(w.model, w.k),
    output:
        touch(f"{SCALING_DIR}/k{{k}}/done"),
    wildcard_constraints:
        k=r"\d+",
    localrule: True


rule scaling_summary:
    input:
        records=lambda w: [r for k in SCALING_KS for r in scaling_records(w.model, k)],
    output:
        summary=f"{SCALING_DIR}/summary.csv",
        jobs=f"{SCALING_DIR}/jobs.csv",
    log:
        f"logs/{DATASET}/scaling/{{model}}/summary.log",
    localrule: True
    conda:
        "../envs/figures.yaml"
    script:
        "../workflow/scripts/scaling_summary.py"


rule scaling_figure:
    input:
        summary=f"{DS}/scaling/{SCALING_MODEL}/summary.csv",
    output:
        png=report(
            f"{DS}/figures/weak_scaling.png",
            category="Scaling",
            caption="../workflow/report/scaling.rst",
        ),
        pdf=f"{DS}/figures/weak_scaling.pdf",
    params:
        figures=config["figures"],
        dataset=DATASET,
        model=SCALING_MODEL,
        iterations=SCALING["iterations"],
    localrule: True
    log:
        f"logs/{DATASET}/figures/weak_scaling.log",
    conda:
        "../envs/figures.yaml"
    script:
        "../workflow/scripts/scaling_figure.py"
