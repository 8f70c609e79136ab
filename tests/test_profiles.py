"""The allocation-mode batch scripts at the scale they are for, without the machines they are for.

`profiles/summit/submit.lsf` and `profiles/frontier/submit.sbatch` are each run by bash as their
scheduler would run them (two nodes, from a stand-in host file or node count), with `-n` passed on
to Snakemake: a dry run of the CIFAR-100 preset, 100 labels, through the real Snakefile.  Every
per-label training job must come out with the site launcher in front of it and the threads of its
GPU's cores, and the script must size Snakemake for the two nodes.  No LSF, jsrun or srun is
needed, since a dry run starts no job.  A `--config` that drops the launcher stops the script before
any job.  (Real Slurm runs of submit.sbatch: tests/test_cluster.py.)
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import REPO, subprocess_path

# What a user's checkout holds that a run reads; copied so that the dry run writes nothing in REPO.
CHECKOUT = ("Snakefile", "config.yaml", "rules", "workflow", "envs", "profiles", "presets")
SCRIPTS = sorted(REPO.glob("profiles/*/submit.*"))


def launcher(site: str) -> str:
    return yaml.safe_load((REPO / "profiles" / site / "config.v8+.yaml").read_text())["config"]["runtime"]["launcher"]


def test_every_submit_script_is_valid_bash():
    assert {p.parent.name for p in SCRIPTS} >= {"summit", "frontier"}
    for script in SCRIPTS:
        result = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
        assert result.returncode == 0, f"{script}: {result.stderr}"


def run_submit(site: str, tmp_path: Path, config_args: list[str]) -> tuple[subprocess.CompletedProcess, int]:
    """The site's submit script, run by bash in a copy of the checkout as its scheduler would run it
    on two nodes, with `-n` and `config_args` for Snakemake; and the GPU count it should size for."""
    venv = Path(sys.prefix)
    if not (venv / "bin" / "activate").is_file():
        pytest.skip(f"the submit scripts source a venv's bin/activate; {venv} is not a venv")
    for name in CHECKOUT:
        (shutil.copytree if (REPO / name).is_dir() else shutil.copy)(REPO / name, tmp_path / name)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "LSB_", "LABELWISE_"))}
    env["LABELWISE_VENV"], env["PATH"] = str(venv), subprocess_path()
    if site == "summit":
        # LSF's host file: the launch node once, then each compute node once per core slot.
        (tmp_path / "hosts").write_text("batch1\n" + "".join(f"h{i % 2 + 1}\n" for i in range(84)))
        env.update(
            LSB_DJOB_HOSTFILE=str(tmp_path / "hosts"),
            LS_SUBCWD=str(tmp_path),
            LABELWISE_SNAKEMAKE_ARGS=" ".join(config_args),
        )
        cmd, gpus = ["bash", "profiles/summit/submit.lsf", "-n"], 12
    else:
        env.update(SLURM_JOB_NUM_NODES="2", SLURM_SUBMIT_DIR=str(tmp_path))
        cmd, gpus = ["bash", "profiles/frontier/submit.sbatch", "-n", *config_args], 16
    return subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600), gpus


@pytest.mark.parametrize("site", ["summit", "frontier"])
def test_submit_script_dry_runs_cifar100_with_the_site_launcher(site, tmp_path):
    (tmp_path / "site.yaml").write_text("data: {root: /nonexistent/cifar-100-python}\n")
    result, gpus = run_submit(site, tmp_path, ["--configfile", "presets/cifar100.yaml", "site.yaml"])
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-4000:]
    assert f"on 2 node(s): {gpus} training jobs at once" in out

    trains = re.findall(r"^Shell command: (.*labelwise train .*)$", out, flags=re.M)
    packs = [re.search(r"--model (\w+) --label ([\d ]+) --settings", t).groups() for t in trains]
    labels = {(m, int(k)) for m, ks in packs for k in ks.split()}
    assert labels == {(m, k) for m in ("wcgan", "dccgan") for k in range(100)}, "every label of each model trained"
    assert len(trains) == 6, "the preset's labels_per_job 40: packs of 40, 40 and 20 labels per model"
    prefix = launcher(site) + " labelwise train "
    assert all(t.startswith(prefix) and " --threads 7 " in t for t in trains), trains[0]
    assert not any((tmp_path / "results").glob("**/*.h5")), "a dry run wrote shards"


def test_a_command_line_config_that_drops_the_launcher_stops_the_submit_script(tmp_path):
    """`--config` replaces the profile's whole `config:` key, launcher included: inside an allocation
    that would train every label on the node running Snakemake, so the run stops before any job."""
    result, _ = run_submit(
        "frontier",
        tmp_path,
        ["--configfile", "presets/cifar100.yaml", "--config", "data={root: /nonexistent/cifar-100-python}"],
    )
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("labelwise: config error:")]
    assert len(errors) == 1 and "runtime.launcher is empty in a frontier allocation" in errors[0], result.stderr[-3000:]
    assert "Traceback" not in result.stderr and not (tmp_path / "results").exists()
