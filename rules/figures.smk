# Figures for people: the sample grid of each model (one row per label), PNG + PDF.
# Every rule here takes seconds: localrules, run by the Snakemake process itself, never a cluster job
# of their own waiting in a queue (a default run through profiles/slurm submitted 39 such jobs).


rule sample_grid:
    input:
        samples=lambda w: samples_of(w.model),
    output:
        png=report(
            path("figure", name="samples_{model}", ext="png"),
            category="Samples",
            caption="../workflow/report/sample_grid.rst",
        ),
        pdf=path("figure", name="samples_{model}", ext="pdf"),
    log:
        path("log", job="figures/samples_{model}"),
    localrule: True
    conda:
        "../envs/figures.yaml"
    params:
        figures=config["figures"],
        dataset=DATASET,
    script:
        "../workflow/scripts/sample_grid.py"


rule training_curves:
    input:
        logs=lambda w: train_logs_of(w.model),
    output:
        png=report(
            path("figure", name="training_curves_{model}", ext="png"),
            category="Training",
            caption="../workflow/report/training_curves.rst",
        ),
        pdf=path("figure", name="training_curves_{model}", ext="pdf"),
    log:
        path("log", job="figures/training_curves_{model}"),
    localrule: True
    conda:
        "../envs/figures.yaml"
    params:
        figures=config["figures"],
        dataset=DATASET,
    script:
        "../workflow/scripts/training_curves.py"


rule metrics_comparison:
    input:
        metrics=expand(path("metrics"), model=MODELS),
    output:
        png=report(
            path("figure", name="metrics_comparison", ext="png"),
            category="Metrics",
            caption="../workflow/report/metrics_comparison.rst",
        ),
        pdf=path("figure", name="metrics_comparison", ext="pdf"),
    log:
        path("log", job="figures/metrics_comparison"),
    localrule: True
    conda:
        "../envs/figures.yaml"
    params:
        figures=config["figures"],
        dataset=DATASET,
    script:
        "../workflow/scripts/metrics_comparison.py"


rule paper_table:
    input:
        metrics=expand(path("metrics"), model=MODELS),
    output:
        csv=report(path("paper_table", ext="csv"), category="Paper", caption="../workflow/report/paper_table.rst"),
        md=path("paper_table", ext="md"),
        tex=path("paper_table", ext="tex"),
    log:
        path("log", job="figures/paper_table"),
    localrule: True
    conda:
        "../envs/figures.yaml"
    params:
        caption=lambda w: labelwise.plan.paper_table_caption(config, len(LABELS)),
    script:
        "../workflow/scripts/paper_table.py"


# `snakemake paper`: every figure and table of the papers for the configured dataset and models.
rule paper:
    default_target: False
    input:
        all_outputs(),
        paper_outputs(),


rule fid_vs_time_figure:
    input:
        runs=expand(path("fid_vs_time", ext="json"), model=MODELS),
    output:
        png=report(
            path("figure", name="fid_vs_time", ext="png"),
            category="Metrics",
            caption="../workflow/report/fid_vs_time.rst",
        ),
        pdf=path("figure", name="fid_vs_time", ext="pdf"),
    log:
        path("log", job="figures/fid_vs_time"),
    localrule: True
    conda:
        "../envs/figures.yaml"
    params:
        figures=config["figures"],
        dataset=DATASET,
    script:
        "../workflow/scripts/fid_vs_time.py"


rule stability_figure:
    input:
        runs=expand(path("fid_vs_time", ext="json"), model=MODELS),
    output:
        png=report(
            path("figure", name="stability", ext="png"),
            category="Metrics",
            caption="../workflow/report/stability.rst",
        ),
        pdf=path("figure", name="stability", ext="pdf"),
    log:
        path("log", job="figures/stability"),
    localrule: True
    conda:
        "../envs/figures.yaml"
    params:
        figures=config["figures"],
        dataset=DATASET,
    script:
        "../workflow/scripts/stability_figure.py"
