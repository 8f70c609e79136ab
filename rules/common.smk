# Helpers shared by the rules: config validation, the static label list, paths and per-rule params.
# Nothing here reads data at parse time except listing an imagefolder's class folders.
import json
import os
import re
import sys

from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

import labelwise.config
import labelwise.models
import labelwise.paths
import labelwise.plan
import labelwise.walltime
from labelwise.errors import LabelwiseError


def _config_error(message):
    # One line, before any job runs; Snakemake's own traceback would bury it.
    sys.exit(f"labelwise: config error: {message}")


# envs/*.yaml install labelwise from ${LABELWISE_ROOT} (pip expands it): this checkout, wherever
# Snakemake copies the env files and whatever the working directory (--sdm conda).
os.environ["LABELWISE_ROOT"] = workflow.basedir

# Snakemake's YAML readers keep the last of repeated keys, read `1e-4` as a string and an unquoted
# `off` as False, and `--config models='{wcgan: {width: 8}}'` gives every nested number as a string.
# They build aliases as shared values: an alias bomb is refused here, before anything expands it.
# Model plugins (LABELWISE_MODEL_PLUGINS: code, see README) are imported here, before validation.
try:
    labelwise.config.check_config_files(workflow.configfiles)
    labelwise.config.read_yaml_values(config)
    labelwise.config.check_numbers(config)
    labelwise.models.load_plugins()
except LabelwiseError as exc:
    _config_error(exc)
try:
    validate(config, labelwise.config.schema_file())  # fills the schema's defaults
except WorkflowError:
    _config_error(labelwise.config.explain_error(config) or "config does not match the schema")

DATA = config["data"]
DATASET = labelwise.plan.dataset_name(config)
MODELS = labelwise.plan.ordered_models(config["models"])  # the papers' order in every table and figure
RESULTS = "results"
try:  # every output lies under results/<dataset>/ or logs/<dataset>/: the name must keep it there
    DS = labelwise.paths.dataset_dir(RESULTS, DATASET).as_posix()
    labelwise.paths.dataset_dir("logs", DATASET)
except LabelwiseError as exc:
    _config_error(exc)


def path(kind, **fields):
    """The pipeline's path of `kind` (labelwise.plan.LAYOUT) in this dataset's results tree; fields
    not given stay wildcards."""
    return labelwise.plan.layout(kind, ds=DS, logs=f"logs/{DATASET}", **fields)


# Command prefix for training jobs (srun/jsrun in allocation mode), and the image they run in there
# (runtime.container: "apptainer exec ... image.sif" after the launcher). Not params: changing how a
# job is launched must not retrain anything.
LAUNCHER = config["runtime"]["launcher"]
CONTAINER = config["runtime"]["container"]
# What the training commands start with: the launcher, then the image (either may be empty).
LAUNCH_PREFIX = " ".join(part.strip() for part in (LAUNCHER, CONTAINER) if part.strip())
# The submit scripts (profiles/*/submit.*) run Snakemake on a launch or first node and set
# LABELWISE_ALLOCATION: there a training job without the launcher would run on that node, not on a
# GPU of the allocation. A `--config` on the command line replaces a profile's whole `config:` key,
# launcher included: stop before any job instead.
ALLOCATION = os.environ.get("LABELWISE_ALLOCATION")  # optional: no envvars directive
if ALLOCATION and not LAUNCHER.strip():
    _config_error(
        f"runtime.launcher is empty in a {ALLOCATION} allocation, so training would run on "
        "the node that runs Snakemake. A --config on the command line replaces the profile's whole config: "
        "key: repeat the profile's launcher there (runtime='{launcher: ...}') or give your settings with "
        "--configfile instead"
    )

# `--sdm apptainer` wraps each job's whole command in the image: in an allocation that puts the
# launcher (srun, jsrun) inside an image that has no Slurm or LSF. There the image goes after the
# launcher instead (runtime.container).
if ALLOCATION and any("apptainer" in str(m).lower() for m in workflow.deployment_settings.deployment_method):
    _config_error(
        f"--sdm apptainer in a {ALLOCATION} allocation would run the launcher inside the image, which has no "
        "scheduler: leave --sdm apptainer out and set runtime.container (e.g. 'apptainer exec --rocm "
        "labelwise.sif') in a --configfile; the launcher then starts the image (docs/clusters.md)"
    )

try:
    LABELS, SHARDED_LABELS = labelwise.plan.selected_labels(config)
except LabelwiseError as exc:
    _config_error(exc)


def unset_profile_variables():
    """{variable: resource} of the environment variables that a profile's resource values name
    ("$LABELWISE_SLURM_PARTITION") and that are not set: Snakemake would pass the text "$NAME" on, and
    sbatch would refuse every job (`invalid partition specified: $LABELWISE_SLURM_PARTITION`)."""
    settings = workflow.resource_settings
    mappings = [settings.default_resources or {}, *settings.overwrite_resources.values()]
    unset = {}
    for mapping in mappings:
        for name, resource in mapping.items():
            raw = getattr(resource, "raw", resource)
            for variable in re.findall(r"\$\{?(\w+)", raw) if isinstance(raw, str) else ():
                if variable not in os.environ:
                    unset.setdefault(variable, name)
    return unset


UNSET = unset_profile_variables()
if UNSET:
    variable, resource = next(iter(UNSET.items()))
    _config_error(
        f"the profile's resource {resource} names ${variable}, which is not set: export {variable} "
        f'("" for the cluster\'s default) before running Snakemake (docs/clusters.md, profiles/slurm)'
    )

# An allocation (the submit scripts pass --resources gpu=<its GPUs>) trains each pack on one of its
# GPUs: runtime.labels_per_job is lowered until every GPU has a training job at once.
LABELS_PER_JOB = config["runtime"]["labels_per_job"]
ALLOCATION_GPUS = workflow.global_resources.get("gpu") if ALLOCATION else None
if ALLOCATION_GPUS is not None and not callable(ALLOCATION_GPUS.value):
    FILLED = labelwise.plan.allocation_labels_per_job(
        LABELS_PER_JOB,
        int(ALLOCATION_GPUS.value),
        len(LABELS),
        sum(not labelwise.models.get(m).conditional for m in MODELS),
        sum(labelwise.models.get(m).conditional for m in MODELS),
    )
    if FILLED != LABELS_PER_JOB:
        print(
            f"labelwise: runtime.labels_per_job {LABELS_PER_JOB} -> {FILLED}: every one of the allocation's "
            f"{ALLOCATION_GPUS.value} GPUs gets a training job",
            file=sys.stderr,
        )
        LABELS_PER_JOB = FILLED


# Feature spaces for metrics: the offline classifier always; Inception when its weights are found
# (or required: then the stats job fails with the message saying where to put them).
EVALUATION = config["evaluation"]
SPACES = ["classifier"]
if EVALUATION["inception"] != "off":
    from labelwise.metrics.inception_weights import resolve_inception_weights  # torch-free

    if EVALUATION["inception"] == "required" or resolve_inception_weights(EVALUATION["inception_weights"]):
        SPACES.append("inception")


wildcard_constraints:
    dataset=DATASET,
    model="|".join(MODELS),
    label=r"\d+",
    space="classifier|inception",


def prepare_params():
    """What the shards depend on: the source, never the label selection (except for image folders,
    whose meta.json lists the selected labels)."""
    params = {k: DATA[k] for k in ("source", "root", "download")}
    if DATA["source"] == "imagefolder":
        params.update(resolution=DATA["resolution"], jpeg_draft=DATA["jpeg_draft"], labels=SHARDED_LABELS)
    return params


def prepare_label_params():
    """What one image-folder label's shard depends on: not the other labels."""
    return {k: DATA[k] for k in ("root", "resolution", "jpeg_draft")}


# The completion marker of the data stage (rules/data.smk): an input of every rule that reads shards.
META = ancient(path("meta"))


PER_LABEL_MODELS = [m for m in MODELS if not labelwise.models.get(m).conditional]
# Every registered conditional model has its training rule, configured or not (a path asks for it).
CONDITIONAL_MODELS = [m for m in labelwise.models.names() if labelwise.models.get(m).conditional]
# budget.snapshots: training also bundles its generator snapshots, evaluated as FID vs training time.
SNAPSHOTS = list(config["budget"]["snapshots"])


def train_settings(wildcards):
    return model_train_settings(wildcards.model)


def model_train_settings(model):
    """Everything that shapes one model's training (labelwise.plan.train_settings), as JSON."""
    return json.dumps(labelwise.plan.train_settings(config, model, len(LABELS)), sort_keys=True)


def generator_of(model, label):
    """The generator a label's samples come from: its own, or the one conditional model's."""
    return path("generator", model=model, label=labelwise.plan.model_files(model, [label])[0])


def train_logs_of(model):
    return [path("train_log", model=model, label=k) for k in labelwise.plan.model_files(model, LABELS)]


def train_runtime_minutes(labels=1):
    """Resource `runtime` of a per-label model's training job of `labels` labels (a pack: its size)."""
    return lambda wildcards: model_runtime_minutes(wildcards.model, labels)


# The side of the images the networks train on (for wall times; the networks round it up).
IMAGE_SIZE = DATA["resolution"] if DATA["source"] == "imagefolder" else labelwise.walltime.IMAGE_SIZE[DATA["source"]]


def model_runtime_minutes(model, labels=1):
    """Scheduler wall time for a training job of `labels` labels (a conditional model: its one network):
    its minutes budget plus margin; without a minutes cap, the counted compute its budget allows for
    each label at an assumed rate (labelwise.walltime.train_minutes)."""
    spec = labelwise.models.get(model)
    settings = labelwise.plan.train_settings(config, model, len(LABELS))  # the conditional model: budgets summed
    minutes = settings["budget"]["minutes"]
    if minutes:
        return int(minutes * 1.25) + 10
    rule_name = f"train_{model}" if spec.conditional else "train"
    return labelwise.walltime.train_minutes(
        spec.loss,
        settings["model"],
        settings["budget"],
        IMAGE_SIZE,
        labels=1 if spec.conditional else labels,
        on_gpu=on_gpu(rule_name),
        threads=config["runtime"]["threads"],
    )


def train_gpus(wildcards):
    """One GPU slot when training on CUDA, so that `--resources gpu=N` runs at most N at once;
    0 on CPU/auto (the Slurm profiles set gpu: 1 themselves, and set-resources wins)."""
    return 1 if config["runtime"]["device"].startswith("cuda") else 0


# Sampling and evaluation ask for a GPU the same way (rules/evaluate.smk, rule sample).
evaluation_gpus = train_gpus


def on_gpu(rule_name):
    """Whether `rule_name`'s jobs compute on a GPU: runtime.device asks for CUDA, or it is `auto` and a
    profile's set-resources gives the rule a GPU (profiles/slurm does)."""
    device = config["runtime"]["device"]
    given = workflow.resource_settings.overwrite_resources.get(rule_name, {}).get("gpu")
    return device.startswith("cuda") or (device == "auto" and bool(getattr(given, "value", given)))


def evaluation_runtime(rule_name, work, per_label=False):
    """Resource `runtime` (minutes) of an evaluation rule: `work(wildcards)` (network -> images) at the
    assumed rate of its device kind (labelwise.walltime); a profile's set-resources still wins.
    per_label: a per-label job, bundled with others on a cluster (profiles/slurm), so only a short
    start-up of its own; each retry gets `attempt` times the wall time."""
    if not per_label:
        return lambda wildcards: labelwise.walltime.minutes(work(wildcards), on_gpu(rule_name))
    fixed = labelwise.walltime.PER_LABEL_FIXED_MINUTES
    return lambda wildcards, attempt: attempt * labelwise.walltime.minutes(work(wildcards), on_gpu(rule_name), fixed)


N_GENERATED = len(LABELS) * EVALUATION["samples_per_label"]  # per model
REAL_PER_LABEL = labelwise.walltime.REAL_IMAGES_PER_LABEL[DATA["source"]]


def real_stats_inputs(wildcards):
    inputs = {"shard": path("shard", label=wildcards.label), "meta": META}
    if wildcards.space == "classifier":
        inputs["classifier"] = path("classifier")
    return inputs


def inception_params(wildcards):
    """Only the Inception statistics depend on the Inception settings."""
    if wildcards.space != "inception":
        return {}
    return {k: EVALUATION[k] for k in ("inception", "inception_weights", "feature_batch_size")}


def samples_of(model):
    return expand(path("samples", model=model), label=LABELS)


def snapshot_bundles_of(model):
    """The training jobs' snapshot bundles (budget.snapshots), in LABELS order; a conditional model: its one bundle."""
    return [path("snapshots", model=model, label=k) for k in labelwise.plan.model_files(model, LABELS)]


def paper_outputs():
    """What `snakemake paper` adds to the default target: the table, FID against training time and the
    stability figure when budget.snapshots is set (and, where defined, the scaling study)."""
    outputs = expand(path("paper_table"), ext=("csv", "md", "tex"))
    if SNAPSHOTS:
        outputs += expand(path("figure"), name=("fid_vs_time", "stability"), ext=("png", "pdf"))
    outputs += scaling_outputs()
    return outputs


def all_outputs():
    return [
        *expand(path("figure", name="samples_{model}"), model=MODELS, ext=("png", "pdf")),
        *expand(path("figure", name="training_curves_{model}"), model=MODELS, ext=("png", "pdf")),
        *expand(path("figure", name="metrics_comparison"), ext=("png", "pdf")),
        *expand(path("metrics"), model=MODELS),
    ]


def label_packs(labels, size):
    """runtime.labels_per_job: the labels in order, cut into packs of `size` (the last may be smaller)."""
    return [labels[i : i + size] for i in range(0, len(labels), size)]


def pack_rule_name(pack):
    return f"train_labels_{pack[0]}_{pack[-1]}"


def inherit_profile_settings(rule_names, from_name):
    """--set-threads / --set-resources given for `from_name` (a profile's `train:` entry) apply to
    `rule_names` too, unless given for them: profiles name `train`, not the packed rules' per-pack names.
    Snakemake has no API to declare this; its public ResourceSettings fields hold the settings by rule
    name, and it reads them when it defines the first rule, so this runs before any rule is included.
    tests/test_lint.py checks the result through a dry run."""
    settings = workflow.resource_settings
    for field in ("overwrite_threads", "overwrite_resources"):
        given = dict(getattr(settings, field))
        if from_name in given:
            setattr(settings, field, {**{name: given[from_name] for name in rule_names}, **given})


# The training command of rules train, train_labels_*, train_<conditional model> and scaling_train.
SNAPSHOTS_ARG = " --snapshots {output.snapshots:q}" if SNAPSHOTS else ""
if LABELS_PER_JOB > 1:  # a profile's `train:` threads and resources
    inherit_profile_settings([pack_rule_name(pack) for pack in label_packs(LABELS, LABELS_PER_JOB)], "train")
# runtime.precision changes what training computes: bf16 is a param of the train rules (switching
# retrains); fp32, the default, adds none, so results trained before the setting existed stay valid.
PRECISION_PARAM = {"precision": "bf16"} if config["runtime"]["precision"] == "bf16" else {}
# The runtime keys reach the command as placeholders, never as text chosen at parse time: Snakemake's
# `code` trigger compares a shell rule's command text as written, so text that depended on a value
# (` --channels-last`) would retrain everything when that value changed (README "What a change reruns").
TRAIN_RUNTIME_ARGS = (
    " --device {config[runtime][device]} --threads {threads}"
    " --progress-seconds {config[runtime][progress_seconds]} --channels-last {config[runtime][channels_last]}"
    " --packed-kernel {config[runtime][packed_kernel]} --cuda-graph {config[runtime][cuda_graph]}"
    " --precision {config[runtime][precision]}"
    " --tensorboard {config[runtime][tensorboard]} --tensorboard-images {config[runtime][tensorboard_images]}"
)


def train_shell(
    label,
    shard,
    generator,
    train_log,
    checkpoints="{params.checkpoints:q}",
    model="{wildcards.model}",
    snapshots=SNAPSHOTS_ARG,
    command="{LAUNCH_PREFIX} labelwise train",
    tensorboard=path("tensorboard"),
):
    """The shell command (a Snakemake format string) that trains `model` on `label`'s shard(s): the
    arguments are the rule's placeholders; `label` None for a conditional model (all labels)."""
    label_arg = "" if label is None else f" --label {label}"
    return (
        f"{command} --model {model}{label_arg} --settings {{params.settings:q}} --shard {shard}"
        f" --generator {generator} --log {train_log} --checkpoints {checkpoints}{TRAIN_RUNTIME_ARGS}"
        f" --tensorboard-dir {tensorboard}{snapshots} 2> {{log:q}}"
    )


# Weak scaling (rules/scaling.smk).
SCALING = config["scaling"]
SCALING_KS = sorted(SCALING["ks"])
SCALING_MODEL = SCALING["model"] or next(iter(PER_LABEL_MODELS), None)
SCALING_DIR = path("scaling")
if SCALING_KS and SCALING["model"] is not None and SCALING["model"] not in PER_LABEL_MODELS:
    _config_error(
        f"config key scaling.model: {SCALING['model']!r} is not one of the configured per-label models "
        f"({', '.join(PER_LABEL_MODELS) or 'none'}); add it under models: or choose another"
    )


def scaling_outputs():
    """The weak-scaling figure (PNG, PDF); nothing when scaling.ks is empty or no per-label model is configured."""
    if not SCALING_KS or SCALING_MODEL is None:
        return []
    return expand(path("figure", name="weak_scaling"), ext=("png", "pdf"))


def scaling_label(wildcards):
    return LABELS[int(wildcards.slot) % len(LABELS)]


def scaling_settings(wildcards):
    """The model's own settings with the scaling budget (iterations only, no minutes cap), as rule train's JSON."""
    budget = {
        "iterations": SCALING["iterations"],
        "minutes": None,
        "checkpoint_every": SCALING["checkpoint_every"] or config["budget"]["checkpoint_every"],
    }
    return json.dumps(
        labelwise.plan.train_settings(config, wildcards.model, len(LABELS), budget=budget), sort_keys=True
    )


def scaling_train_inputs(wildcards):
    """The label's shard, and the barrier of the previous group: group k starts when that one is done."""
    k = int(wildcards.k)
    inputs = {"shard": path("shard", label=scaling_label(wildcards)), "meta": META}
    previous = [x for x in SCALING_KS if x < k]
    if previous:
        inputs["previous_group"] = path("scaling_done", model=wildcards.model, k=max(previous))
    return inputs


def scaling_records(model, k):
    return expand(path("scaling_record", model=model, k=k), slot=range(int(k)))


# scaling_train's command: `labelwise train` behind the launcher, inside a wrapper that times it and
# writes the record; `launched` is taken before the launcher, so step start-up counts in the makespan.
SCALING_JOB_COMMAND = (
    "launched=$(date +%s.%N); {LAUNCH_PREFIX} python -m labelwise.scaling job --record {output.record:q}"
    " --k {wildcards.k} --slot {wildcards.slot} --launched $launched --"
)
