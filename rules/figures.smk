# Figures for people: the sample grid of each model (one row per label), PNG + PDF.
# Every rule here takes seconds: localrules, run by the Snakemake process itself, never a cluster job
# of their own waiting in a queue (a default run through profiles/slurm submitted 39 such jobs).


rule sample_grid:
    input:
        samples=lambda w: samples_of(w.model),
    output:
        png=report(
            f"{DS}/figures/samples_{{model}}.png",
            category="Samples",
            caption="../workflow/report/sample_grid.rst",
        ),
        pdf=f"{DS}/figures/samples_{{model}}.pdf",
    params:
        figures=config["figures"],
        dataset=DATASET,
    localrule: True
    log:
        f"logs/{DATASET}/figures/samples_{{model}}.log",
    conda:
        "../envs/figures.yaml"
    script:
        "../workflow/scripts/sample_grid.py"


rule training_curves:
    input:
        logs=lambda w: train_logs_of(w.model),
    output:
        png=report(
            f"{DS}/figures/training_curves_{{model}}.png",
            category="Training",
            caption="../workflow/report/training_curves.rst",
        ),
        pdf=f"{DS}/figures/training_curves_{{model}}.pdf",
    params:
        figures=config["figures"],
        dataset=DATASET,
    localrule: True
    log:
        f"logs/{DATASET}/figures/training_curves_{{model}}.log",
    conda:
        "../envs/figures.yaml"
    script:
        "../workflow/scripts/training_curves.py"


rule metrics_comparison:
    input:
        metrics=expand(f"{DS}/{{model}}/metrics.json", model=MODELS),
    output:
        png=report(
            f"{DS}/figures/metrics_comparison.png",
            category="Metrics",
            caption="../workflow/report/metrics_comparison.rst",
        ),
        pdf=f"{DS}/figures/metrics_comparison.pdf",
    params:
        figures=config["figures"],
        dataset=DATASET,
    localrule: True
    log:
        f"logs/{DATASET}/figures/metrics_comparison.log",
    conda:
        "../envs/figures.yaml"
    script:
        "../workflow/scripts/metrics_comparison.py"


rule paper_table:
    input:
        metrics=expand(f"{DS}/{{model}}/metrics.json", model=MODELS),
    output:
        csv=report(f"{DS}/paper/metrics_table.csv", category="Paper", caption="../workflow/report/paper_table.rst"),
        md=f"{DS}/paper/metrics_table.md",
        tex=f"{DS}/paper/metrics_table.tex",
    params:
        caption=lambda w: labelwise.plan.paper_table_caption(config, len(LABELS)),
    localrule: True
    log:
        f"logs/{DATASET}/figures/paper_table.log",
    conda:
        "../envs/figures.yaml"
    script:
        "../workflow/scripts/paper_table.py"


# `snakemake paper`: every figure and table of the papers for the configured dataset and models.
rule paper:
    input:
        all_outputs(),
        paper_outputs(),
    default_target: False


rule fid_vs_time_figure:
    input:
        runs=expand(f"{DS}/{{model}}/fid_vs_time.json", model=MODELS),
    output:
        png=report(
            f"{DS}/figures/fid_vs_time.png",
            category="Metrics",
            caption="../workflow/report/fid_vs_time.rst",
        ),
        pdf=f"{DS}/figures/fid_vs_time.pdf",
    params:
        figures=config["figures"],
        dataset=DATASET,
    localrule: True
    log:
        f"logs/{DATASET}/figures/fid_vs_time.log",
    conda:
        "../envs/figures.yaml"
    script:
        "../workflow/scripts/fid_vs_time.py"
