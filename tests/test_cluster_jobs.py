"""What a run submits to a Slurm cluster, read from dry runs through the real `profiles/slurm`.

* Every sampling, classifier, statistics and evaluation job of the CIFAR-10 preset asks for a GPU
  and for a wall time that covers its images at a pessimistic GPU rate (the issue: they ran on CPUs
  with the default 30 minutes, far past the wall time).
* A default run submits few jobs: at most 2 per training job plus 5.  Figures and tables are
  localrules (run by Snakemake itself); sampling is one job per model, statistics one per space.

A dry run starts nothing, so no Slurm is needed; the Slurm executor plugin is loaded all the same
(and asks `scontrol`, stubbed for every test by conftest.failing_scontrol).  Which rules are local comes from
the Snakefile through Snakemake's API (a dry run does not print it).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, subprocess_path, workflow_rules

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
        LABELWISE_SLURM_PARTITION="",
    )


def dry_run(tmp_path: Path, env: dict, args: list[str]) -> list[dict]:
    """The jobs of `snakemake <args> -n` in the copy: rule, wildcards and resources of each."""
    result = subprocess.run(
        [sys.executable, "-m", "snakemake", *args, "-n"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-3000:]
    jobs = []
    for block in re.split(r"\n(?=\[[^\n]*\]\n(?:local)?rule )", out):
        rule = re.search(r"^(?:local)?rule (\w+):", block, flags=re.M)
        if not rule:
            continue
        resources = re.search(r"^\s+resources: (.*)$", block, flags=re.M)
        wildcards = re.search(r"^\s+wildcards: (.*)$", block, flags=re.M)
        jobs.append(
            {
                "rule": rule.group(1),
                "wildcards": dict(kv.split("=", 1) for kv in wildcards.group(1).split(", ")) if wildcards else {},
                "resources": dict(kv.split("=", 1) for kv in resources.group(1).split(", ")) if resources else {},
            }
        )
    return jobs


def local_rules(workdir: Path) -> set[str]:
    """The rules that run inside Snakemake (localrules, rules without a command such as `all`)."""
    rules = workflow_rules(workdir / "Snakefile", [workdir / "config.yaml"], workdir)
    return {r["name"] for r in rules if r["local"]}


def submitted(jobs: list[dict], local: set[str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for job in jobs:
        if job["rule"] not in local:
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
    # cifar10: 10 labels x 5,000 real images; 5,000 samples per label and model; two models.
    real, generated = 10 * 5000, 10 * 5000
    work = {
        "sample": {"generator": generated},
        "classifier": {"classifier": 3 * 5 * real},  # 5 epochs (schema default), forward + backward
        "real_stats/inception": {"inception": real},
        "real_stats/classifier": {"classifier": real},
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
    # the preset packs its 10 labels into one training job per model (runtime.labels_per_job 40)
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
    # before issue 14: 59 jobs (every job but `all`), of which 39 sampling, statistics and figure jobs
    assert sum(counts.values()) == training + 7, counts
    assert not {"sample_grid", "training_curves", "metrics_comparison"} & set(counts)


def test_a_script_job_with_a_gpu_starts_again_behind_the_launcher(tmp_path):
    """Allocation mode: a `script:` job given a GPU reruns itself behind runtime.launcher (here `env
    WRAPPED=yes`, standing in for srun/jsrun), runs its stage there once, and ends with its status."""
    script = tmp_path / "job.py"
    script.write_text(
        "import os, sys, types\n"
        "from labelwise.cli import snakemake_entry\n"
        "from labelwise.errors import LabelwiseError\n"
        "smk = types.SimpleNamespace(config={'runtime': {'launcher': os.environ['LAUNCHER']}},\n"
        "                            resources={'gpu': int(os.environ['GPU'])}, log=[], threads=1)\n"
        "def stage(smk):\n"
        "    with open(os.environ['RECORD'], 'a') as f:\n"
        "        f.write(os.environ.get('WRAPPED', 'direct') + '\\n')\n"
        "    raise LabelwiseError('bad input')\n"
        "snakemake_entry(smk, stage)\n"
    )
    for launcher, gpu, expected in (("env WRAPPED=yes", 1, "yes"), ("env WRAPPED=yes", 0, "direct"), ("", 1, "direct")):
        record = tmp_path / f"record-{gpu}-{bool(launcher)}"
        env = dict(os.environ, LAUNCHER=launcher, GPU=str(gpu), RECORD=str(record))
        env.pop("LABELWISE_LAUNCHED", None)
        result = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=120)
        assert result.returncode == 1, result.stderr[-2000:]  # the stage's error status comes through
        assert record.read_text().splitlines() == [expected], (launcher, gpu)


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
