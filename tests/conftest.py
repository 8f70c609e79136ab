"""Shared fixtures: tiny shards and tiny training settings that run in seconds on a CPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from labelwise.images import write_images

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("LABELWISE_SHARED_DATA", REPO.parent / "shared" / "data"))

# Snakemake runs in subprocesses whose jobs call `python` and `labelwise`, so this interpreter's bin
# goes first on PATH. The test machine has no Inception weights; a developer's torch hub cache must
# not be found either (it would change what the metrics stages compute).
NO_HUB = {"TORCH_HOME": "/nonexistent-torch-home"}


def snakemake_env() -> dict[str, str]:
    """The environment of a Snakemake subprocess: this venv first on PATH, no Inception weights."""
    return dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}", **NO_HUB)


def snakemake_command(workdir: Path, configfile: Path, *args: str, cores: int = 2) -> list[str]:
    """`python -m snakemake` on the repository's Snakefile, run in `workdir` with one config file."""
    return [
        sys.executable,
        "-m",
        "snakemake",
        "-s",
        str(REPO / "Snakefile"),
        "--directory",
        str(workdir),
        "--configfile",
        str(configfile),
        "--cores",
        str(cores),
        *args,
    ]


def run_limited(cmd: list[str], *, memory: int, timeout: float = 300, **kwargs) -> subprocess.CompletedProcess:
    """`cmd` in a subprocess whose address space is capped at `memory` bytes (RLIMIT_AS, set between
    fork and exec): a regression that allocates what it should refuse ends there in a MemoryError
    within seconds instead of exhausting the machine."""
    import resource

    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (memory, memory))

    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, preexec_fn=cap, **kwargs)


def one_error_line(result: subprocess.CompletedProcess) -> str:
    """The one ERROR line of a failed `labelwise` process, after checking that there is exactly one,
    no traceback and a non-zero exit."""
    out = result.stdout + result.stderr
    errors = [line for line in out.splitlines() if " ERROR " in line]
    assert result.returncode != 0 and len(errors) == 1 and "Traceback" not in out, out[-3000:]
    return errors[0]


TINY_MODEL = {
    "width": 4,
    "latent_dim": 8,
    "batch_size": 8,
    "lr": 1e-3,
    "betas": [0.5, 0.9],
    "critic_steps": 2,
    "gp_lambda": 10.0,
}


@pytest.fixture
def tiny_settings():
    return dict(TINY_MODEL)


@pytest.fixture
def make_shard(tmp_path):
    """Write a shard of random 'digit-like' images for `label` and return its path."""

    def make(label: int = 0, n: int = 24, size: int = 28, channels: int = 1, seed: int = 0) -> Path:
        rng = np.random.default_rng(seed + label)
        images = rng.integers(0, 256, (n, channels, size, size), dtype=np.uint8)
        path = tmp_path / "shards" / f"{label}.h5"
        write_images(
            path, images, label=label, class_name=str(label), source="test", resolution=size, channels=channels
        )
        return path

    return make


def kill_after_checkpoints(proc, checkpoint_dir: Path, count: int, timeout: float) -> None:
    """SIGKILL `proc` once `checkpoint_dir` holds `count` checkpoints (or it ended, or `timeout` s passed)."""
    import signal
    import time

    from labelwise.train.checkpoint import list_checkpoints

    deadline = time.monotonic() + timeout
    while len(list_checkpoints(checkpoint_dir)) < count and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def workflow_rules(snakefile: Path, configfiles: list[Path], workdir: Path) -> list[dict]:
    """Every rule Snakemake parses from `snakefile`: name, basedir, conda env file, script, shell
    command and whether it runs inside Snakemake (localrules, rules without a command).

    Snakemake 9's public API lists rule names only (`WorkflowApi.list_rules` prints them); the
    parsed rules sit behind `WorkflowApi._workflow` and local rules in `Workflow._localrules`. Tests
    read them here, in this one place, and nowhere else in labelwise touches a private Snakemake
    attribute (tests/test_private_names.py, tools/snakemake_lint.py). What depends on them is also
    checked by behaviour: the jobs a dry run submits (test_cluster_jobs), the envs that build.
    """
    configs = [str(p) for p in configfiles]
    code = (
        "import json\nfrom pathlib import Path\n"
        "from snakemake.api import SnakemakeApi\n"
        "from snakemake.settings.types import ConfigSettings, OutputSettings, ResourceSettings\n"
        "with SnakemakeApi(OutputSettings()) as api:\n"
        f"    wf = api.workflow(resource_settings=ResourceSettings(cores=1), snakefile=Path({str(snakefile)!r}),\n"
        f"                      config_settings=ConfigSettings(configfiles=[Path(p) for p in {configs!r}]),\n"
        f"                      workdir=Path({str(workdir)!r}))\n"
        "    w = wf._workflow\n"
        "    print(json.dumps([{'name': r.name, 'basedir': str(r.basedir), 'env': r.conda_env, 'script': r.script,\n"
        "                       'shell': r.shellcmd,\n"
        "                       'local': r.group is None and (r.name in w._localrules or r.norun)}\n"
        "                      for r in w.rules]))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=workdir, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.fixture
def python():
    return sys.executable


@pytest.fixture(scope="session")
def random_inception_weights(tmp_path_factory):
    """torch-fidelity's InceptionV3 layout with random weights, scaled so activations neither vanish
    (the default init shrinks them ~1e-8 by the last layer) nor explode."""
    torch.manual_seed(0)
    from labelwise.metrics import inception as inc

    net = inc.build_inception()  # random init: no file is read
    for m in net.modules():
        if isinstance(m, torch.nn.Conv2d):
            torch.nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
    with torch.no_grad():
        # Random-weight features share a large common part, which would give every image the same
        # top class (IS exactly 1): project it out of the classifier layer so that the logits vary.
        common = net(torch.randint(0, 256, (1, 3, 8, 8), dtype=torch.uint8))[0][0]
        common = common / common.norm()
        w = net.fc.weight
        w.sub_(torch.outer(w @ common, common)).mul_(50.0)
    path = tmp_path_factory.mktemp("inception") / "random-inception.pth"
    torch.save(net.state_dict(), path)
    return path


# --- no daemon of the suite outlives it -------------------------------------------------------------
# tests/test_cluster.py starts munged, slurmctld and slurmd (tests/cluster/slurm_up.sh) and its fixture
# stops them (slurm_down.sh). This check makes a leak fail the run: daemons that the suite's pid files
# name and that were not already running when the session started (a developer's own test cluster).
SLURM_STATE = Path(os.environ.get("LABELWISE_SLURM_DIR", "/tmp/labelwise-slurm"))


def suite_daemons() -> dict[str, int]:
    """name -> pid of the test cluster's daemons that are running, from slurm_up.sh's pid files."""
    files = {"slurmctld": SLURM_STATE / "run" / "slurmctld.pid", "slurmd": SLURM_STATE / "run" / "slurmd.pid"}
    if (SLURM_STATE / "run" / "munged.ours").exists():  # munged counts only when slurm_up.sh started it
        files["munged"] = Path("/run/munge/munged.pid")
    running = {}
    for name, path in files.items():
        try:
            pid = int(path.read_text().split()[0])
            os.kill(pid, 0)
        except (OSError, ValueError, IndexError):
            continue
        running[name] = pid
    return running


def pytest_sessionstart(session):
    session.config._daemons_before = suite_daemons()


def pytest_sessionfinish(session, exitstatus):
    before = getattr(session.config, "_daemons_before", {})
    leaked = {name: pid for name, pid in suite_daemons().items() if before.get(name) != pid}
    if leaked:
        listed = ", ".join(f"{name} (pid {pid})" for name, pid in sorted(leaked.items()))
        sys.stderr.write(
            f"\nERROR: the test suite left {listed} running; stop them with "
            "tests/cluster/slurm_down.sh and fix the fixture that started them\n"
        )
        session.exitstatus = 1
