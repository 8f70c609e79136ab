# Figures for people: the sample grid of each model (one row per label), PNG + PDF.


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
    log:
        f"logs/{DATASET}/figures/samples_{{model}}.log",
    conda:
        "../envs/figures.yaml"
    script:
        "../workflow/scripts/sample_grid.py"
