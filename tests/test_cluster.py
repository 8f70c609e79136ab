"""The real pipeline on a real (single-node, 2 fake GPUs) Slurm: tests/cluster/slurm_up.sh.

Three ways a training job meets the scheduler, each on a tiny config of the real Snakefile
(prepare + the wcgan train jobs of two labels; no evaluation, to stay fast):

1. per-job mode (`--profile profiles/slurm --profile tests/cluster/profile`): every `train` job is
   its own sbatch job, jobs running at the same time see different GPUs, and the generators are
   bit-identical to a local `snakemake --cores 2` run of the same config;
2. allocation mode (`profiles/frontier/submit.sbatch` in one `sbatch --gpus-per-node=2` job, the
   local executor, the launcher `srun --exact -n1 --gpus=1`): both labels train at the same time,
   on different GPUs;
3. `scancel` of a running `train` job once it has a checkpoint: Snakemake resubmits it (retries),
   the rerun resumes from the checkpoint, and the generator equals an uninterrupted local run's.

The evidence is the line every training job logs first (labelwise/train/loop.py):
"[wcgan label 0] device cpu, 1 thread(s), CUDA_VISIBLE_DEVICES=1, host vm, start <iso time> (...); budget: ...";
a job's end is the modification time of its log (the "done:" line is its last write).
With runtime.device cpu no job needs a GPU, but Slurm still allocates one per train job (gpu: 1
from the profiles' set-resources), and that is what sets CUDA_VISIBLE_DEVICES.

Needs root (slurm_up.sh installs and starts Slurm); skipped, with the reason, where the cluster
cannot be brought up. Marker `cluster`: `pytest -m "not cluster"` leaves it out. About 4 minutes
(measured times: docs/clusters.md).
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from datetime import datetime
from pathlib import Path

import pytest
import torch
import yaml
from conftest import REPO

from labelwise.train import load_generator

pytestmark = pytest.mark.cluster

if os.geteuid() != 0:
    pytest.skip("cluster tests need root: tests/cluster/slurm_up.sh installs and starts Slurm", allow_module_level=True)
if shutil.which("timeout") is None:
    pytest.skip("cluster tests need coreutils' timeout", allow_module_level=True)
if importlib.util.find_spec("snakemake_executor_plugin_slurm") is None:
    pytest.skip("snakemake-executor-plugin-slurm is not installed", allow_module_level=True)

SNAKEFILE = REPO / "Snakefile"
MODEL = "wcgan"
LABELS = [0, 7]
CONFIG = {
    "data": {"source": "mnist5k", "labels": LABELS},
    "models": {MODEL: {"width": 4, "latent_dim": 8, "batch_size": 8}},
    # ~5 s of training per label: long enough that the two labels' jobs overlap in time
    "budget": {"iterations": 100, "checkpoint_every": 10},
    "evaluation": {"samples_per_label": 5},
    "runtime": {"device": "cpu", "threads": 1, "progress_seconds": 1},
}
# The scancel test: ~15 s of training, a checkpoint every 10 iterations (well under a second).
SCANCEL_LABEL = 0
SCANCEL_CONFIG = dict(CONFIG, budget={"iterations": 300, "checkpoint_every": 10})
LAUNCHER = "env -u SLURM_GPUS_PER_NODE srun --exact -N1 -n1 --gpus=1 -c1"  # Frontier's, -c7 -> -c1

START_LINE = re.compile(
    r"\[(?P<model>\w+) label (?P<label>\d+)\] device (?P<device>\S+), (?P<threads>\d+) thread\(s\), "
    r"CUDA_VISIBLE_DEVICES=(?P<cvd>\S+), host (?P<host>\S+), start (?P<start>\S+)"
)
SUBMITTED = re.compile(r"submitted with SLURM jobid (\d+) \(log: (\S+)\)")
TIMES: dict[str, float] = {}  # wall seconds of each step, printed by the tests (pytest -s / -rP)


def generator_paths(labels):
    return [f"results/mnist5k/{MODEL}/generators/{k}.pt" for k in labels]


def timed(name, t0):
    TIMES[name] = round(time.monotonic() - t0, 1)
    print(f"cluster timing: {name} {TIMES[name]} s")


def run(cmd, *, cwd, limit, env=None) -> subprocess.CompletedProcess:
    """`cmd` under `timeout -k 10 <limit>` (and a Python timeout beyond it), output captured."""
    return subprocess.run(
        ["timeout", "-k", "10", str(limit), *map(str, cmd)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=limit + 30,
    )


def end(proc: subprocess.Popen):
    """Stop a `timeout ...` process that still runs: SIGTERM (timeout passes it on), then SIGKILL."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def snakemake_cmd(workdir: Path, config: dict, targets, *args) -> list:
    (workdir / "config.yaml").write_text(yaml.safe_dump(config))
    # targets right after -s: options such as --resources/--config/--set-threads take every word after them
    return [
        sys.executable,
        "-m",
        "snakemake",
        "-s",
        SNAKEFILE,
        *targets,
        "--directory",
        workdir,
        "--configfile",
        workdir / "config.yaml",
        *args,
    ]


def slurm_profiles():
    return ["--profile", REPO / "profiles" / "slurm", "--profile", REPO / "tests" / "cluster" / "profile"]


def squeue_state(jobid) -> str:
    r = run(["squeue", "-h", "-j", jobid, "-t", "all", "-o", "%T"], cwd=None, limit=10)
    return r.stdout.strip()


def wait_job(jobid, limit) -> str:
    """Poll squeue every 0.5 s (sbatch --wait polls far more slowly) until the job has ended."""
    deadline = time.monotonic() + limit
    state = ""
    while time.monotonic() < deadline:
        state = squeue_state(jobid)
        if state in ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL"):
            break
        time.sleep(0.5)
    return state


def train_runs(workdir: Path, labels) -> list[dict]:
    """Per label: the start line of its train log (device, threads, GPU, host, start) and its end."""
    runs = []
    for label in labels:
        path = workdir / "logs" / "mnist5k" / "train" / MODEL / f"{label}.log"
        text = path.read_text()
        m = START_LINE.search(text)
        assert m, f"{path} has no start line:\n{text}"
        assert f"[{MODEL} label {label}] done:" in text, f"{path} does not end with 'done:':\n{text}"
        runs.append(
            dict(
                m.groupdict(),
                label=int(m["label"]),
                log=text,
                start=datetime.fromisoformat(m["start"]).timestamp(),
                end=path.stat().st_mtime,
            )
        )
    return runs


def check_gpus(runs, require_overlap: bool) -> int:
    """Each job saw one GPU; jobs overlapping in time saw different ones. Returns the overlaps."""
    for r in runs:
        assert r["device"] == "cpu" and r["threads"] == "1", r
        assert re.fullmatch(r"\d+", r["cvd"]), f"label {r['label']} saw CUDA_VISIBLE_DEVICES={r['cvd']}, not one GPU"
        assert r["host"] == socket.gethostname()
    overlaps = 0
    for i, a in enumerate(runs):
        for b in runs[i + 1 :]:
            if a["start"] < b["end"] and b["start"] < a["end"]:
                overlaps += 1
                assert a["cvd"] != b["cvd"], f"labels {a['label']} and {b['label']} ran at once on GPU {a['cvd']}"
    if require_overlap:
        spans = [(r["label"], r["cvd"], round(r["end"] - r["start"], 1)) for r in runs]
        assert overlaps >= 1, f"the train jobs did not run at the same time: {spans}"
    return overlaps


def assert_same_generators(a: Path, b: Path, labels):
    for label, path in zip(labels, generator_paths(labels)):
        ga, pa = load_generator(a / path)
        gb, pb = load_generator(b / path)
        assert pa["iterations"] == pb["iterations"]
        sa, sb = ga.state_dict(), gb.state_dict()
        assert sa.keys() == sb.keys()
        for key in sa:
            assert torch.equal(sa[key], sb[key]), f"label {label}: {key} differs between {a} and {b}"


# --- fixtures ---------------------------------------------------------------------------------------


def slurm_down():
    """tests/cluster/slurm_down.sh: stops what slurm_up.sh started (by its pid files; munged only if
    slurm_up.sh started it), whatever state the tests left."""
    r = run(["bash", REPO / "tests" / "cluster" / "slurm_down.sh"], cwd=REPO, limit=120)
    if r.returncode != 0:
        print(f"slurm_down.sh exited with {r.returncode}: {r.stderr[-800:]}")


@pytest.fixture(scope="module")
def cluster():
    """The test cluster up, its exports (SLURM_CONF, ...) in os.environ for the whole module; stopped
    again afterwards, however the tests ended (and when slurm_up.sh failed halfway)."""
    t0 = time.monotonic()
    try:
        try:
            r = run(["bash", REPO / "tests" / "cluster" / "slurm_up.sh"], cwd=REPO, limit=300)
        except subprocess.TimeoutExpired:
            pytest.skip("tests/cluster/slurm_up.sh did not finish in 300 s")
        if r.returncode != 0:
            pytest.skip(
                f"tests/cluster/slurm_up.sh could not bring the test cluster up (exit {r.returncode}): "
                f"{r.stderr.strip()[-800:]}"
            )
        exports = dict(re.findall(r"^export (\w+)=(\S*)$", r.stdout, re.M))
        assert "SLURM_CONF" in exports, r.stdout
        with pytest.MonkeyPatch.context() as mp:
            for key, value in exports.items():
                mp.setenv(key, value)
            mp.setenv("LABELWISE_SLURM_ACCOUNT", "labelwise-test")  # sbatch -A (not validated: no slurmdbd)
            # `labelwise` and the venv's python for shell rules, srun steps and sbatch --export=ALL jobs
            mp.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
            timed("cluster up", t0)
            yield exports
    finally:
        slurm_down()


class LocalRun:
    """`snakemake --cores 2` of `config` in its own dir, started in the background at once.

    The local references run while the cluster runs mostly wait for Slurm's status polling;
    sharing the 2 cores slows jobs down but changes no result (CPU training is deterministic).
    """

    LIMIT = 300

    def __init__(self, workdir: Path, config: dict, labels, name: str):
        self.workdir, self.name, self.t0 = workdir, name, time.monotonic()
        env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
        cmd = snakemake_cmd(workdir, config, generator_paths(labels), "--cores", "2")
        self.out = open(workdir / "snakemake.out", "w")
        self.proc = subprocess.Popen(
            ["timeout", "-k", "10", str(self.LIMIT), *map(str, cmd)],
            cwd=workdir,
            env=env,
            stdout=self.out,
            stderr=subprocess.STDOUT,
        )
        self.seconds = None
        self._waiter = threading.Thread(target=self._wait, daemon=True)
        self._waiter.start()

    def _wait(self):
        self.proc.wait()
        self.seconds = round(time.monotonic() - self.t0, 1)

    def result(self) -> Path:
        self._waiter.join(timeout=self.LIMIT + 30)
        rc = self.proc.poll()
        if not self.out.closed:
            self.out.close()
            TIMES[self.name] = self.seconds
            print(f"cluster timing: {self.name} {self.seconds} s (in the background)")
        assert rc == 0, (
            f"{self.name}: snakemake exited with {rc}:\n{(self.workdir / 'snakemake.out').read_text()[-3000:]}"
        )
        return self.workdir

    def stop(self):
        end(self.proc)
        self.out.close()


@pytest.fixture(scope="module")
def local_runs(tmp_path_factory):
    runs = {
        "short": LocalRun(tmp_path_factory.mktemp("local"), CONFIG, LABELS, "local reference (2 labels)"),
        "long": LocalRun(
            tmp_path_factory.mktemp("local-long"),
            SCANCEL_CONFIG,
            [SCANCEL_LABEL],
            "local reference (long budget, 1 label)",
        ),
    }
    yield runs
    for r in runs.values():
        r.stop()


@pytest.fixture(scope="module")
def local_reference(local_runs):
    return local_runs["short"].result()


@pytest.fixture(scope="module")
def per_job_run(cluster, local_runs, tmp_path_factory):
    """One per-job-mode run of the tiny config; its work dir (the scancel test continues in it)."""
    workdir = tmp_path_factory.mktemp("slurm")
    t0 = time.monotonic()
    r = run(snakemake_cmd(workdir, CONFIG, generator_paths(LABELS), *slurm_profiles()), cwd=workdir, limit=240)
    out = r.stdout + r.stderr
    (workdir / "snakemake.out").write_text(out)
    assert r.returncode == 0, f"snakemake exited with {r.returncode}:\n{out[-4000:]}"
    timed("per-job mode run", t0)
    return workdir, out


# --- tests ------------------------------------------------------------------------------------------


def test_per_job_mode_every_train_job_is_an_sbatch_job_on_its_own_gpu(per_job_run, local_reference):
    workdir, out = per_job_run
    submitted = SUBMITTED.findall(out)
    train_jobs = {
        log.split("/rule_train/")[1].split("/")[0]: jobid for jobid, log in submitted if "/rule_train/" in log
    }
    assert sorted(train_jobs) == [f"{MODEL}_{k}" for k in LABELS], submitted
    assert len({jobid for jobid, _ in submitted}) == len(submitted) == len(LABELS) + 1  # + prepare
    assert "localrule" not in out  # nothing ran outside Slurm
    for jobid in train_jobs.values():
        assert squeue_state(jobid) == "COMPLETED"

    runs = train_runs(workdir, LABELS)
    overlaps = check_gpus(runs, require_overlap=True)
    print(f"per-job mode: train jobs {train_jobs}, GPUs {[r['cvd'] for r in runs]}, {overlaps} overlap(s)")
    assert_same_generators(workdir, local_reference, LABELS)


def test_allocation_mode_labels_train_at_once_on_different_gpus(cluster, local_runs, local_reference, tmp_path):
    t0 = time.monotonic()
    (tmp_path / "logs").mkdir()  # sbatch -o logs/labelwise-%j.out: Slurm does not create the folder
    cmd = snakemake_cmd(
        tmp_path,
        CONFIG,
        generator_paths(LABELS),
        "--config",
        f"runtime={{launcher: '{LAUNCHER}'}}",
        "--set-threads",
        "train=1",
    )
    # the shipped submit script; only what a 2-CPU, 2-fake-GPU node cannot give is overridden
    env = dict(
        os.environ,
        LABELWISE_VENV=str(Path(sys.executable).parents[1]),
        LABELWISE_PROFILE=str(REPO / "profiles" / "frontier"),
        LABELWISE_CPUS_PER_GPU="1",
    )
    r = run(
        [
            "sbatch",
            "--parsable",
            "-A",
            "labelwise-test",
            "-p",
            cluster["LABELWISE_SLURM_PARTITION"],
            "-t",
            "10",
            "-N1",
            "--exclusive",
            "--gpus-per-node=2",
            REPO / "profiles" / "frontier" / "submit.sbatch",
            *cmd[3:],
        ],  # the submit script runs `snakemake --profile ... --cores ... --resources ...` itself
        cwd=tmp_path,
        limit=60,
        env=env,
    )
    assert r.returncode == 0, r.stderr
    jobid = r.stdout.strip().split(";")[0]
    state = wait_job(jobid, 180)
    out = (tmp_path / "logs" / f"labelwise-{jobid}.out").read_text()
    if state != "COMPLETED":
        run(["scancel", jobid], cwd=None, limit=10)
    assert state == "COMPLETED", f"allocation job {jobid} is {state!r}:\n{out[-4000:]}"
    timed("allocation mode run", t0)

    steps = re.findall(rf"{re.escape(LAUNCHER)} labelwise train --model {MODEL} --label (\d+)", out)
    assert sorted(map(int, steps)) == LABELS, "every train job must start through the srun launcher"
    runs = train_runs(tmp_path, LABELS)
    overlaps = check_gpus(runs, require_overlap=True)
    print(f"allocation mode: job {jobid}, GPUs {[r['cvd'] for r in runs]}, {overlaps} overlap(s)")
    assert_same_generators(tmp_path, local_reference, LABELS)


def test_scancelled_train_job_is_resubmitted_and_resumes_bit_identical(per_job_run, local_runs):
    reference = local_runs["long"].result()
    # Continue in the per-job run's work dir (shards already there): the bigger budget reruns the
    # train job. Its old checkpoints go first, so that any resume must come from this run's.
    workdir, _ = per_job_run
    checkpoints = workdir / "results" / "mnist5k" / MODEL / "checkpoints" / str(SCANCEL_LABEL)
    shutil.rmtree(checkpoints, ignore_errors=True)
    out_path = workdir / "snakemake-scancel.out"
    cmd = snakemake_cmd(workdir, SCANCEL_CONFIG, generator_paths([SCANCEL_LABEL]), *slurm_profiles())
    t0 = time.monotonic()
    limit = 240
    with open(out_path, "w") as out_file:
        proc = subprocess.Popen(
            ["timeout", "-k", "10", str(limit), *map(str, cmd)],
            cwd=workdir,
            stdout=out_file,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            victim, seen = None, None
            while proc.poll() is None and time.monotonic() - t0 < limit:
                if victim is None:
                    m = re.search(
                        rf"submitted with SLURM jobid (\d+) \(log: \S*/rule_train/{MODEL}_{SCANCEL_LABEL}/",
                        out_path.read_text(),
                    )
                    victim = m and m[1]
                ckpts = sorted(
                    int(p.name[5:14]) for p in checkpoints.glob("ckpt-*.pt") if re.fullmatch(r"ckpt-\d{9}\.pt", p.name)
                )
                if victim and ckpts and squeue_state(victim) == "RUNNING":
                    seen = ckpts[-1]
                    r = run(["scancel", victim], cwd=None, limit=10)
                    assert r.returncode == 0, r.stderr
                    print(f"scancel {victim} at checkpoint {seen}, {time.monotonic() - t0:.1f} s into the run")
                    break
                time.sleep(0.2)
            rc = proc.wait(timeout=limit + 30)
        finally:
            end(proc)
    out = out_path.read_text()
    assert victim and seen is not None, (
        f"never saw train job {MODEL}_{SCANCEL_LABEL} running with a checkpoint:\n{out[-3000:]}"
    )
    assert rc == 0, f"snakemake exited with {rc}:\n{out[-4000:]}"
    timed("scancel run", t0)

    attempts = [j for j, log in SUBMITTED.findall(out) if f"/rule_train/{MODEL}_{SCANCEL_LABEL}/" in log]
    assert len(attempts) == 2 and attempts[0] == victim, f"expected the cancelled job and one resubmission: {attempts}"
    assert squeue_state(victim) == "CANCELLED"
    assert squeue_state(attempts[1]) == "COMPLETED"
    (run_,) = train_runs(workdir, [SCANCEL_LABEL])  # the log of the last attempt (each attempt rewrites it)
    m = re.search(rf"\[{MODEL} label {SCANCEL_LABEL}\] resuming from checkpoint at iteration (\d+)", run_["log"])
    assert m, f"the rerun did not resume:\n{run_['log']}"
    resumed = int(m[1])
    assert seen <= resumed < SCANCEL_CONFIG["budget"]["iterations"]
    assert f"done: {SCANCEL_CONFIG['budget']['iterations']} iterations" in run_["log"]
    print(f"scancel: job {victim} cancelled at checkpoint {seen}; job {attempts[1]} resumed at {resumed}")
    assert_same_generators(workdir, reference, [SCANCEL_LABEL])
