"""Shared helpers and fixtures of the test suite: tiny shards, settings and configs that run in seconds
on a CPU, the Snakemake launcher, fake CIFAR files, training jobs of every kind."""

from __future__ import annotations

import functools
import json
import os
import pickle
import shutil
import subprocess
import sys
import tempfile
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


@functools.cache
def failing_scontrol() -> Path:
    """A folder holding an `scontrol` that fails at once.  Snakemake loads its Slurm executor plugin at
    every start, and the plugin runs `scontrol show config` (10 s timeout): where Slurm's client is
    installed without a running controller (this machine after tests/test_cluster.py stopped its
    cluster) that is a 9 s stall per `snakemake` command, which has nothing to do with what the tests
    check.  Tests that run Snakemake without a cluster put this folder first on PATH."""
    folder = Path(tempfile.mkdtemp(prefix="labelwise-tests-bin-"))
    (folder / "scontrol").write_text("#!/bin/sh\nexit 1\n")
    (folder / "scontrol").chmod(0o755)
    return folder


def subprocess_path() -> str:
    """PATH of a test's subprocesses: the failing `scontrol`, this venv's bin, then the inherited PATH."""
    return os.pathsep.join([str(failing_scontrol()), str(Path(sys.executable).parent), os.environ["PATH"]])


def snakemake_env() -> dict[str, str]:
    """The environment of a Snakemake subprocess: this venv first on PATH, no Inception weights, no
    Slurm controller to wait for (`failing_scontrol`)."""
    return dict(os.environ, PATH=subprocess_path(), **NO_HUB)


def snakemake_command(workdir: Path, configfiles, *args: str, cores: int = 2) -> list[str]:
    """`python -m snakemake` on the repository's Snakefile, run in `workdir` with `configfiles`: one
    path, several (composed in order), or none (then the Snakefile reads `workdir`'s config.yaml)."""
    files = [configfiles] if isinstance(configfiles, (str, Path)) else list(configfiles)
    return [
        sys.executable,
        "-m",
        "snakemake",
        "-s",
        str(REPO / "Snakefile"),
        "--directory",
        str(workdir),
        *(["--configfile", *map(str, files)] if files else []),
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


# The real Snakefile on a tiny config (tests/test_pipeline.py and every other test that runs Snakemake).
TINY = {
    "data": {"source": "mnist5k", "labels": [0, 7]},
    "models": {
        "wcgan": {"width": 4, "latent_dim": 8, "batch_size": 8},
        "dccgan": {"width": 4, "latent_dim": 8, "batch_size": 8},
    },
    "budget": {"iterations": 6, "checkpoint_every": 3},
    "evaluation": {"samples_per_label": 5},
    "figures": {"grid_columns": 5},
    "runtime": {"device": "cpu", "progress_seconds": 1},
}


def checkout(tmp_path: Path) -> Path:
    """A copy of what a dry run reads of a user's checkout."""
    for name in ("Snakefile", "config.yaml", "rules", "workflow", "envs"):
        (shutil.copytree if (REPO / name).is_dir() else shutil.copy)(REPO / name, tmp_path / name)
    return tmp_path


def snakemake(workdir: Path, config: dict, *args: str) -> subprocess.CompletedProcess:
    """Snakemake on the repository's Snakefile in `workdir`, with `config` written as its config file."""
    import yaml

    (workdir / "config.yaml").write_text(yaml.safe_dump(config))
    cmd = snakemake_command(workdir, workdir / "config.yaml", *args)
    return subprocess.run(cmd, capture_output=True, text=True, env=snakemake_env(), timeout=600)


# --- fake CIFAR files in the official python-pickle layout ------------------------------------------
CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def cifar_batch(images: np.ndarray, labels: list[int], labels_key: bytes) -> dict:
    """A training pickle's dict in the official layout (bytes keys, data N×3072 in CHW order)."""
    return {
        b"batch_label": b"fake batch",
        labels_key: [int(x) for x in labels],
        b"data": images.reshape(len(images), -1),
        b"filenames": [f"img_{i}.png".encode() for i in range(len(images))],
    }


def fake_cifar10(rng, per_batch: int = 6) -> tuple[dict[str, object], np.ndarray, np.ndarray]:
    """Files of a tiny CIFAR-10 (name -> object) plus all training images and labels in batch order."""
    files, all_images, all_labels = {}, [], []
    for b in range(5):
        images = rng.integers(0, 256, (per_batch, 3, 32, 32), dtype=np.uint8)
        labels = (np.arange(per_batch) + b * per_batch) % 10  # every class appears
        files[f"data_batch_{b + 1}"] = cifar_batch(images, labels, b"labels")
        all_images.append(images)
        all_labels.append(labels)
    files["test_batch"] = cifar_batch(rng.integers(0, 256, (4, 3, 32, 32), dtype=np.uint8), [0, 0, 0, 0], b"labels")
    files["batches.meta"] = {b"label_names": [n.encode() for n in CIFAR10_NAMES], b"num_vis": 3072}
    return files, np.concatenate(all_images), np.concatenate(all_labels)


def write_cifar(files: dict[str, object], folder: Path, protocol: int = 2) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, obj in files.items():
        (folder / name).write_bytes(obj if isinstance(obj, bytes) else pickle.dumps(obj, protocol=protocol))
    return folder


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


def train_cmd(shard, root: Path, settings: dict, budget: dict) -> list[str]:
    """`labelwise train` of label 0 of the wcgan model into root/g.pt, root/log.csv, root/ckpt (CPU, one thread)."""
    blob = json.dumps({"model": settings, "budget": budget, "seed": 0})
    return [
        *(sys.executable, "-m", "labelwise.cli", "train", "--model", "wcgan", "--label", "0", "--settings", blob),
        *("--shard", str(shard), "--generator", str(root / "g.pt"), "--log", str(root / "log.csv")),
        *("--checkpoints", str(root / "ckpt"), "--device", "cpu", "--threads", "1", "--progress-seconds", "0.5"),
    ]


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


# --- training jobs of every kind ------------------------------------------------------------------
# The training engine (labelwise.train.loop.train_job) runs three kinds of job through one loop: one
# label of a per-label model, K labels packed into one job, and the conditional model over all labels.
# Behaviours that every kind must have are tested once, parametrised over JOB_KINDS.
JOB_KINDS = ("one-label", "packed", "conditional")
PACKED_LABELS = (2, 5, 7)
PACKED_COUNTS = (24, 20, 30)  # different image counts: each label samples from its own


def weights(path) -> dict:
    """The weights a generator file holds (a conditional model's: its one network's)."""
    return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]


def assert_same_state(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), f"tensor {key} differs"


def assert_close_state(a: dict, b: dict) -> None:
    """Equal up to rounding (packed against separate, one layout against another): rtol 1e-4, atol 1e-5."""
    assert a.keys() == b.keys()
    for key in a:
        if a[key].dtype.is_floating_point:
            torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-5, msg=lambda m: f"{key}: {m}")  # noqa: B023
        else:
            assert torch.equal(a[key], b[key]), f"tensor {key} differs"


def log_rows(path) -> list[list[str]]:
    """A training log's rows without the wall_seconds column: what a resumed run must reproduce exactly."""
    return [[c for i, c in enumerate(line.split(",")) if i != 1] for line in Path(path).read_text().splitlines()]


class Job:
    """One training job of a kind (JOB_KINDS) on tiny shards: its outputs under a root folder, run
    in-process (`train`) or as a `labelwise train` subprocess (`command`)."""

    def __init__(self, kind: str, shards: list[Path], labels: list[int], model: str):
        self.kind, self.shards, self.labels, self.model = kind, shards, labels, model

    @property
    def names(self) -> list:
        """The members' file names: their labels, or the conditional model's one name."""
        return ["all"] if self.kind == "conditional" else list(self.labels)

    def outputs(self, root: Path, snapshots: bool = False) -> list:
        from labelwise.train import Outputs

        return [
            Outputs(
                generator=root / f"g{n}.pt",
                log=root / f"log{n}.csv",
                checkpoints=root / f"ckpt{n}",
                snapshots=root / f"snap{n}.pt" if snapshots else None,
            )
            for n in self.names
        ]

    def train(self, root: Path, budget, settings: dict, seed: int = 0, snapshots: bool = False, **runtime):
        from labelwise.train import train_job

        labels = None if self.kind == "conditional" else self.labels
        runtime.setdefault("threads", 1)
        outs = self.outputs(root, snapshots)
        return train_job(self.shards, self.model, settings, budget, seed, outs, labels=labels, **runtime)

    def command(self, root: Path, settings: dict, budget: dict, *extra: str) -> list[str]:
        blob = json.dumps({"model": settings, "budget": budget, "seed": 0})
        outs = self.outputs(root)
        cmd = [sys.executable, "-m", "labelwise.cli", "train", "--model", self.model, "--settings", blob]
        if self.kind != "conditional":
            cmd += ["--label", *map(str, self.labels)]
        cmd += ["--shard", *map(str, self.shards)]
        for option, attr in (("--generator", "generator"), ("--log", "log"), ("--checkpoints", "checkpoints")):
            cmd += [option, *(str(getattr(o, attr)) for o in outs)]
        return [*cmd, "--device", "cpu", "--threads", "1", "--progress-seconds", "0.2", *extra]


@pytest.fixture
def job(make_shard):
    """job(kind, model=None): a Job of that kind; the model defaults to wcgan (cgan for the conditional kind)."""

    def make(kind: str, model: str | None = None) -> Job:
        if kind == "one-label":
            labels = [PACKED_LABELS[1]]
        elif kind in ("packed", "conditional"):
            labels = list(PACKED_LABELS)
        else:
            raise ValueError(kind)
        counts = dict(zip(PACKED_LABELS, PACKED_COUNTS))
        shards = [make_shard(label=k, n=counts[k]) for k in labels]
        return Job(kind, shards, labels, model or ("cgan" if kind == "conditional" else "wcgan"))

    return make
