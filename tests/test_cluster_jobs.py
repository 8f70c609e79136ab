"""What a run submits to a Slurm cluster through the real `profiles/slurm`: read from dry runs, and
recorded from every `sbatch` call of a whole run (tests/cluster/fake_slurm.py).

* Every sampling, classifier, statistics and evaluation job of the CIFAR-10 preset asks for a GPU
  and for a wall time that covers its images at a pessimistic GPU rate (the issue: they ran on CPUs
  with the default 30 minutes, far past the wall time).
* A default run submits few jobs: at most 2 per training job plus 5.  Figures and tables are
  localrules (run by Snakemake itself); sampling and statistics are per-label jobs, bundled by the
  profile into groups of up to 50 per model or feature space, one submission each (and ImageNet's
  1,000 `prepare_label` jobs likewise).
* Every submission is named labelwise_<run id>, its comment says the rule (stage) and its model and
  label (wildcards), the CPU-only jobs go to $LABELWISE_SLURM_CPU_PARTITION and the GPU jobs to
  $LABELWISE_SLURM_PARTITION, every job may be requeued, and a group asks for what one of its jobs
  needs for the sum of their wall times (the plugin runs a group's jobs one after another).
* Without a minutes budget, a training job's wall time covers its counted compute at the stated rate.

A dry run starts nothing, so no Slurm is needed; the Slurm executor plugin is loaded all the same
(and asks `scontrol`, stubbed for every test by conftest.failing_scontrol).  Which rules are local comes from
the Snakefile through Snakemake's API (a dry run does not print it).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import REPO, TINY, dry_run_jobs, fake_slurm, subprocess_path, workflow_rules

from labelwise import walltime
from labelwise.config import load_config
from labelwise.train.compute import label_iteration_flops

CHECKOUT = ("Snakefile", "config.yaml", "rules", "workflow", "envs", "profiles", "presets")
EVALUATION_RULES = ("sample", "classifier", "real_stats", "evaluate")
# Images per second that any GPU of a cluster beats (a V100 is expected at 1,000+ Inception images/s):
# the wall time asked must cover the job's images at this rate.
PESSIMISTIC_GPU_RATE = {"inception": 100, "classifier": 1000, "generator": 1000}


def checkout_copy(tmp_path: Path, with_inception_weights: bool = False) -> dict:
    """A copy of what a user's checkout holds, and the environment for dry runs in it."""
    for name in CHECKOUT:
        (shutil.copytree if (REPO / name).is_dir() else shutil.copy)(REPO / name, tmp_path / name)
    torch_home = tmp_path / "torch"
    if with_inception_weights:  # found by the parse-time lookup: the Inception jobs join the DAG
        (torch_home / "hub" / "checkpoints").mkdir(parents=True)
        (torch_home / "hub" / "checkpoints" / "pt_inception-2015-12-05-6726825d.pth").write_bytes(b"")
    return dict(
        os.environ,
        PATH=subprocess_path(),
        TORCH_HOME=str(torch_home),
        LABELWISE_SLURM_ACCOUNT="",
        LABELWISE_SLURM_PARTITION="gpu",
        LABELWISE_SLURM_CPU_PARTITION="cpu",
    )


def snakemake_in(tmp_path: Path, env: dict, args: list[str]) -> str:
    """`snakemake <args>` in the copy, which must succeed; its output."""
    result = subprocess.run(
        [sys.executable, "-m", "snakemake", *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900
    )
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-4000:]
    return out


def dry_run(tmp_path: Path, env: dict, args: list[str]) -> list[dict]:
    """The jobs of `snakemake <args> -n` in the copy: rule, wildcards, resources and group (the
    profile's) of each."""
    return dry_run_jobs(snakemake_in(tmp_path, env, [*args, "-n"]))


def local_rules(workdir: Path) -> set[str]:
    """The rules that run inside Snakemake (localrules, rules without a command such as `all`)."""
    rules = workflow_rules(workdir / "Snakefile", [workdir / "config.yaml"], workdir)
    return {r["name"] for r in rules if r["local"]}


def submitted(jobs: list[dict], local: set[str]) -> dict[str, int]:
    """Submissions per rule (a group: one, under the name of its rule)."""
    counts: dict[str, int] = {}
    seen_groups = set()
    for job in jobs:
        if job["rule"] in local or (job["group"] is not None and job["group"] in seen_groups):
            continue
        seen_groups.add(job["group"])
        counts[job["rule"]] = counts.get(job["rule"], 0) + 1
    return counts


@pytest.mark.parametrize("device_args", [["--config", "runtime={device: cuda}"], []], ids=["cuda", "auto"])
def test_cifar10_preset_on_slurm_gives_every_evaluation_job_a_gpu_and_the_time_for_its_images(tmp_path, device_args):
    env = checkout_copy(tmp_path, with_inception_weights=True)
    # The command of issue 14's "Done when", as a user types it (no target: the default one); and
    # without --config, the preset's device `auto`: the profile's set-resources give the GPU.
    jobs = dry_run(tmp_path, env, ["--profile", "profiles/slurm", "--configfile", "presets/cifar10.yaml", *device_args])
    evaluation = [j for j in jobs if j["rule"] in EVALUATION_RULES]
    assert sorted({j["rule"] for j in evaluation}) == sorted(EVALUATION_RULES)
    # cifar10: 10 labels x 5,000 real images; 5,000 samples per label and model; two models. Sampling
    # and statistics: one job per label.
    real, generated = 10 * 5000, 10 * 5000
    work = {
        "sample": {"generator": generated // 10},
        "classifier": {"classifier": 3 * 5 * real},  # 5 epochs (schema default), forward + backward
        "real_stats/inception": {"inception": real // 10},
        "real_stats/classifier": {"classifier": real // 10},
        "evaluate": {"inception": generated, "classifier": generated},
    }
    for job in evaluation:
        key = job["rule"] + (f"/{job['wildcards']['space']}" if job["rule"] == "real_stats" else "")
        needed_minutes = sum(n / PESSIMISTIC_GPU_RATE[net] for net, n in work[key].items()) / 60
        res = job["resources"]
        assert res.get("gpu") == "1", f"{key} gets no GPU: {res}"
        assert int(res["runtime"]) >= needed_minutes, (
            f"{key}: {res['runtime']} min for {needed_minutes:.0f} min of work"
        )
        assert int(res["runtime"]) <= 120, f"{key}: {res['runtime']} min is far more than a GPU needs"
    counts = submitted(jobs, local_rules(tmp_path))
    # the preset packs its 10 labels into one training job per model (runtime.labels_per_job 40); the
    # per-label sampling and statistics jobs go in one group per model and per feature space
    assert counts == {"prepare": 1, "train_labels_0_9": 2, "classifier": 1, "real_stats": 2, "sample": 2, "evaluate": 2}


@pytest.mark.parametrize("labels_per_job", [1, 10])
def test_default_run_on_slurm_submits_at_most_two_jobs_per_training_job_plus_five(tmp_path, labels_per_job):
    env = checkout_copy(tmp_path)
    args = ["--profile", "profiles/slurm"]
    if labels_per_job > 1:
        args += ["--config", f"runtime={{labels_per_job: {labels_per_job}}}"]
    jobs = dry_run(tmp_path, env, args)
    counts = submitted(jobs, local_rules(tmp_path))
    training = sum(n for rule, n in counts.items() if rule.startswith("train"))
    assert training == 20 // labels_per_job  # 10 mnist5k labels x 2 models, in packs of labels_per_job
    assert sum(counts.values()) <= 2 * training + 5, counts
    # before issue 14: 59 jobs (every job but `all`), of which 39 sampling, statistics and figure jobs;
    # since issue 24 the 20 sampling and 10 statistics jobs are per label, in 3 groups
    assert sum(counts.values()) == training + 7, counts
    assert counts["sample"] == 2 and counts["real_stats"] == 1
    assert sum(j["rule"] == "sample" for j in jobs) == 20 and sum(j["rule"] == "real_stats" for j in jobs) == 10
    assert not {"sample_grid", "training_curves", "metrics_comparison"} & set(counts)


# runtime.container in allocation mode, standing in for `apptainer exec ... image.sif`: a command that
# runs the rest inside; it records whether the launcher had already run (the launcher outside it).
CONTAINER = 'sh -c \'INSIDE="${WRAPPED:-direct} launcher, then image" exec "$@"\' image'


def test_a_script_job_with_a_gpu_starts_again_behind_the_launcher_and_in_the_image(tmp_path):
    """Allocation mode: a `script:` job given a GPU reruns itself behind runtime.launcher (here `env
    WRAPPED=yes`, standing in for srun/jsrun) and, with runtime.container, inside the image that the
    launcher starts; a job without a GPU runs in the image alone.  It runs its stage there once, and
    ends with its status."""
    script = tmp_path / "job.py"
    script.write_text(
        "import os, sys, types\n"
        "from labelwise.cli import snakemake_entry\n"
        "from labelwise.errors import LabelwiseError\n"
        "runtime = {'launcher': os.environ['LAUNCHER'], 'container': os.environ['CONTAINER']}\n"
        "smk = types.SimpleNamespace(config={'runtime': runtime},\n"
        "                            resources={'gpu': int(os.environ['GPU'])}, log=[], threads=1)\n"
        "def stage(smk):\n"
        "    with open(os.environ['RECORD'], 'a') as f:\n"
        "        f.write(os.environ.get('WRAPPED', 'direct') + ', ' + os.environ.get('INSIDE', 'no image') + '\\n')\n"
        "    raise LabelwiseError('bad input')\n"
        "snakemake_entry(smk, stage)\n"
    )
    cases = [
        ("env WRAPPED=yes", "", 1, "yes, no image"),
        ("env WRAPPED=yes", "", 0, "direct, no image"),
        ("", "", 1, "direct, no image"),
        ("env WRAPPED=yes", CONTAINER, 1, "yes, yes launcher, then image"),
        ("env WRAPPED=yes", CONTAINER, 0, "direct, direct launcher, then image"),
    ]
    for i, (launcher, container, gpu, expected) in enumerate(cases):
        record = tmp_path / f"record-{i}"
        env = dict(os.environ, LAUNCHER=launcher, CONTAINER=container, GPU=str(gpu), RECORD=str(record))
        env["PATH"] = subprocess_path()  # the image's `python`: here this venv's
        env.pop("LABELWISE_LAUNCHED", None)
        result = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=120)
        assert result.returncode == 1, result.stderr[-2000:]  # the stage's error status comes through
        assert record.read_text().splitlines() == [expected], (launcher, container, gpu)


def test_on_the_cpu_the_wall_time_covers_inception_at_the_measured_cpu_rate(tmp_path):
    """runtime.device cpu: no GPU asked for, and the wall time of an evaluation covers its 50,000
    generated images at the 2.7 Inception images/s measured on one CPU thread (docs/benchmarks.md)."""
    env = checkout_copy(tmp_path, with_inception_weights=True)
    jobs = dry_run(
        tmp_path,
        env,
        ["--profile", "profiles/slurm", "--configfile", "presets/cifar10.yaml", "--config", "runtime={device: cpu}"],
    )
    evaluate = [j for j in jobs if j["rule"] == "evaluate"]
    assert len(evaluate) == 2
    for job in evaluate:
        assert int(job["resources"]["runtime"]) >= 50_000 / 2.7 / 60
    # set-resources in profiles/slurm still reserve a GPU (resources are the profile's to set)
    assert all(j["resources"].get("gpu") == "1" for j in evaluate)


def test_without_a_minutes_budget_the_train_wall_time_covers_its_counted_compute(tmp_path):
    """budget.minutes null: each training job asks for the time its budget's counted GFLOP take at the
    stated GPU rate (labelwise.walltime.TRAIN_GFLOP_PER_S) with the safety margin, not a flat 24 h.  The
    GFLOP come from labelwise.train.compute's counter here, from a torch-free estimate in the Snakefile."""
    env = checkout_copy(tmp_path)
    preset = "presets/cifar10.yaml"
    args = ["--configfile", preset, "--config", "budget={minutes: null}", "runtime={device: cuda}"]
    jobs = dry_run(tmp_path, env, ["--profile", "profiles/slurm", *args])
    config = load_config(REPO / preset)
    train = {j["wildcards"]["model"]: j for j in jobs if j["rule"] == "train_labels_0_9"}
    assert sorted(train) == sorted(config["models"])
    for model, job in train.items():
        settings = config["models"][model]
        per_label = label_iteration_flops(model, settings, 3, 32) / 1e9  # CIFAR: 3 x 32 x 32
        counted = config["budget"]["iterations"] * per_label * 10  # one packed job of the 10 labels
        needed = counted / walltime.TRAIN_GFLOP_PER_S["gpu"] / 60
        minutes = int(job["resources"]["runtime"])
        assert needed <= minutes <= walltime.FIXED_MINUTES + 1.25 * walltime.SAFETY * needed, (model, minutes, needed)
        assert minutes != 24 * 60


# --- every sbatch call of a whole run ----------------------------------------------------------------

DOCUMENTED_TRAIN_OPTIONS = ("gpu_model", "constraint", "qos", "slurm_extra")


def with_documented_options(profile: Path) -> None:
    """Uncomment the profile's documented GPU model, constraint, QOS and slurm_extra lines of `train`."""
    text = profile.read_text()
    pattern = rf"^(\s+)# ((?:{'|'.join(DOCUMENTED_TRAIN_OPTIONS)}): .*)$"
    assert len(re.findall(pattern, text, flags=re.M)) == len(DOCUMENTED_TRAIN_OPTIONS), "the profile documents them"
    profile.write_text(re.sub(pattern, r"\1\2", text, flags=re.M))


def sbatch_calls(state: Path) -> list[dict]:
    """The recorded sbatch calls: options (name -> value; flags -> True) of each."""
    calls = []
    for line in (state / "sbatch.jsonl").read_text().splitlines():
        argv, options = json.loads(line)["argv"], {}
        i = 0
        while i < len(argv):
            arg = argv[i]
            if "=" in arg and arg.startswith("--"):
                key, value = arg.split("=", 1)
                options[key] = value
            elif arg.startswith("-") and i + 1 < len(argv) and not argv[i + 1].startswith("-"):
                options[arg], i = argv[i + 1], i + 1
            else:
                options[arg] = True
            i += 1
        calls.append(options)
    return calls


@pytest.mark.slow
def test_every_submission_says_what_it_runs_where_and_may_be_requeued(tmp_path):
    """A whole run of the tiny config through profiles/slurm (its documented train options on), Slurm's
    commands replaced by the recording fake: every sbatch call as documented in docs/clusters.md."""
    env = checkout_copy(tmp_path)
    env.update(fake_slurm(tmp_path))
    with_documented_options(tmp_path / "profiles" / "slurm" / "config.v8+.yaml")
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(TINY))
    labels, models = TINY["data"]["labels"], list(TINY["models"])
    targets = [f"results/mnist5k/{m}/samples/{k}.h5" for m in models for k in labels]
    targets += [f"results/mnist5k/stats/classifier/{k}.npz" for k in labels]
    fast = ["--slurm-status-command", "squeue", "--slurm-init-seconds-before-status-checks", "1"]
    snakemake_in(tmp_path, env, [*targets, "--profile", "profiles/slurm", *fast])
    assert all((tmp_path / t).is_file() for t in targets)

    calls = sbatch_calls(tmp_path / "state")
    names = {c["--job-name"] for c in calls}
    assert len(names) == 1 and re.fullmatch(r"labelwise_[0-9a-f-]{36}", names.pop())
    assert all(c.get("--requeue") for c in calls), "every job may be requeued after a preemption"
    by_comment = {c["--comment"]: c for c in calls}
    expected = {"rule_prepare", "rule_classifier", "rule_stats_classifier_real_stats"}
    expected |= {f"rule_train_wildcards_{m}_{k}" for m in models for k in labels}
    expected |= {f"rule_sample_{m}_sample" for m in models}  # a group: per model, its labels inside
    assert sorted(by_comment) == sorted(expected) and len(calls) == len(expected)
    assert by_comment["rule_prepare"]["-p"] == "cpu" and "--gpus" not in by_comment["rule_prepare"]
    for comment, call in by_comment.items():
        if comment != "rule_prepare":
            assert call["-p"] == "gpu", comment
        if comment.startswith("rule_train"):  # the profile's documented options reach sbatch
            assert call["--gpus"] == "a100:1" and call["-C"] == "a100|h100" and call["--qos"] == "normal"
            assert call["--mail-type"] == "FAIL"
        elif comment != "rule_prepare":
            assert call["--gpus"] == "1", comment
    # A group asks for one member's GPU, cores and memory, for its members' wall times added up (device
    # cpu: the CPU rate; 5 samples per label).
    one_sample = walltime.minutes({"generator": 5}, on_gpu=False, fixed=walltime.PER_LABEL_FIXED_MINUTES)
    for model in models:
        group = by_comment[f"rule_sample_{model}_sample"]
        assert (group["--cpus-per-task"], group["--mem"]) == ("4", "16000")
        assert int(group["-t"]) == len(labels) * one_sample, group
