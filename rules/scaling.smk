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
# Not part of `rule all`; `snakemake paper` builds it (scaling_outputs()). Settings and helpers:
# rules/common.smk.


rule scaling_train:
    input:
        unpack(scaling_train_inputs),
    output:
        record=path("scaling_record"),
    log:
        path("log", job="scaling/{model}/k{k}/job{slot}"),
    wildcard_constraints:
        k=r"\d+",
        slot=r"\d+",
    conda:
        "../envs/train.yaml"
    threads: config["runtime"]["threads"]
    resources:
        runtime=60,  # minutes (a short fixed budget); a profile may set its own
        gpu=train_gpus,
    params:
        label=scaling_label,
        settings=scaling_settings,
        # Scratch (not outputs): the generator, log and checkpoints of a timing run; nothing reads them.
        scratch=lambda w: path("scaling_scratch", model=w.model, k=w.k, slot=w.slot),
    # As rule train, inside the wrapper SCALING_JOB_COMMAND.
    shell:
        train_shell(
            "{params.label:q}",
            "{input.shard:q}",
            "{params.scratch:q}/generator.pt",
            "{params.scratch:q}/train_log.csv",
            checkpoints="{params.scratch:q}/checkpoints",
            snapshots="",
            command=SCALING_JOB_COMMAND,
            tensorboard="{params.scratch:q}/tensorboard",
        )


# The barrier of group k: a touched file once all its k jobs are done (a shell-less rule, so no code
# change ever reruns it and, through the chain, the larger groups).
rule scaling_group_done:
    input:
        lambda w: scaling_records(w.model, w.k),
    output:
        touch(path("scaling_done")),
    wildcard_constraints:
        k=r"\d+",
    localrule: True


rule scaling_summary:
    input:
        records=lambda w: [r for k in SCALING_KS for r in scaling_records(w.model, k)],
    output:
        summary=path("scaling_summary"),
        jobs=path("scaling_jobs"),
    log:
        path("log", job="scaling/{model}/summary"),
    localrule: True
    conda:
        "../envs/figures.yaml"
    script:
        "../workflow/scripts/scaling_summary.py"


rule scaling_figure:
    input:
        summary=path("scaling_summary", model=SCALING_MODEL),
    output:
        png=report(
            path("figure", name="weak_scaling", ext="png"),
            category="Scaling",
            caption="../workflow/report/scaling.rst",
        ),
        pdf=path("figure", name="weak_scaling", ext="pdf"),
    log:
        path("log", job="figures/weak_scaling"),
    localrule: True
    conda:
        "../envs/figures.yaml"
    params:
        figures=config["figures"],
        dataset=DATASET,
        model=SCALING_MODEL,
        iterations=SCALING["iterations"],
    script:
        "../workflow/scripts/scaling_figure.py"
