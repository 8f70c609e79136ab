# Raw dataset -> per-label HDF5 shards + meta.json (the raw data is read once per dataset).


rule prepare:
    output:
        meta=f"{DS}/meta.json",
        shards=expand(f"{DS}/shards/{{label}}.h5", label=SHARDED_LABELS),
    params:
        data=prepare_params(),
        name=DATASET,
        out_dir=DS,
    log:
        f"logs/{DATASET}/prepare.log",
    benchmark:
        f"{DS}/benchmarks/prepare.tsv"
    conda:
        "../envs/data.yaml"
    script:
        "../workflow/scripts/prepare.py"
