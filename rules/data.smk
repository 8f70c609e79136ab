# Raw dataset -> per-label HDF5 shards + meta.json. meta.json is written last and lists every shard
# with its checksum: a shard is trusted only through it, so the rules that read shards take it as
# input too, as ancient(): it must exist, but its rewrite (one more label) reruns nothing by itself.
# mnist5k and CIFAR: one job, their raw files hold every label. An image folder: one job per label
# (prepare_label) that reads only that class folder, then one small job that assembles meta.json
# from the shards' attributes; a label added to data.labels is the only one prepared.

if DATA["source"] == "imagefolder":

    rule prepare_label:
        output:
            shard=path("shard"),
        log:
            path("log", job="prepare/{label}"),
        benchmark:
            path("benchmark", job="prepare/{label}")
        conda:
            "../envs/data.yaml"
        threads: config["runtime"]["threads"]  # decoding threads
        resources:
            # bundled with other labels' on a cluster (profiles/slurm): a short wall time of its own
            runtime=lambda w, threads, attempt: attempt
            * labelwise.walltime.prepare_label_minutes(
                labelwise.walltime.REAL_IMAGES_PER_LABEL["imagefolder"], threads
            ),
        params:
            data=prepare_label_params(),
            out_dir=DS,
        script:
            "../workflow/scripts/prepare_label.py"

    rule prepare:
        input:
            shards=expand(path("shard"), label=SHARDED_LABELS),
        output:
            meta=path("meta"),
        log:
            path("log", job="prepare"),
        benchmark:
            path("benchmark", job="prepare")
        conda:
            "../envs/data.yaml"
        params:
            data=prepare_params(),
            name=DATASET,
            out_dir=DS,
        script:
            "../workflow/scripts/prepare.py"

else:

    rule prepare:
        output:
            meta=path("meta"),
            shards=expand(path("shard"), label=SHARDED_LABELS),
        log:
            path("log", job="prepare"),
        benchmark:
            path("benchmark", job="prepare")
        conda:
            "../envs/data.yaml"
        params:
            data=prepare_params(),
            name=DATASET,
            out_dir=DS,
        script:
            "../workflow/scripts/prepare.py"
