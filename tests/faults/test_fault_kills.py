"""Kills: SIGKILL a real `labelwise train` process at random points, rerun it each time.

Every kill is checked on its own — the checkpoints it left are whole and lie exactly on the
uninterrupted run's trajectory — and the run that finally completes ends with a generator that is
bit-identical to the uninterrupted one.  Half of the kill points are random times, half are random
checkpoint writes (the kill is sent as soon as the write's temporary file appears), so that some
kills land between the temporary file's creation and its rename; those are counted by the
`.ckpt-*.tmp-<pid>.pt` file they leave behind.  Delays are drawn in units of the uninterrupted run's
time per iteration, so that the chain of kills spans the same iterations on a fast or a busy machine.
"""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
import time

import pytest
import torch
from conftest import train_cmd

from labelwise.train import Budget, Outputs, load_generator, train_label
from labelwise.train import checkpoint as ckpt_module
from labelwise.train.checkpoint import checkpoint_path, list_checkpoints
from labelwise.train.writers import LOCK_NAME

pytestmark = pytest.mark.faults

SEED = 20240611  # fixes every kill point's delay and kind
KILLS = 8  # kill points tried in one chain of reruns
EXTRA_WRITE_KILLS = 3  # further write-targeted kills if none of the planned ones landed mid-write
ITERATIONS = 80
CHECKPOINT_EVERY = 2
MAX_DELAY = 5.0  # iterations' worth of time after the process's first progress line (training under way)
TEMP = re.compile(r"^\.ckpt-(\d{9})\.tmp-(\d+)\.pt$")


def _same(a, b, where="") -> None:
    """Exact equality of nested checkpoint content (tensors bit for bit, NaN equal to NaN)."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and a.shape == b.shape, where
        if a.is_floating_point():
            assert torch.equal(torch.isnan(a), torch.isnan(b)) and torch.equal(a.nan_to_num(), b.nan_to_num()), where
        else:
            assert torch.equal(a, b), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            _same(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _same(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


def assert_on_trajectory(path, reference_dir) -> int:
    """A checkpoint left by a killed run equals the uninterrupted run's checkpoint of the same iteration
    in everything that shapes training (weights, optimiser moments, both random streams, log losses);
    only wall-clock fields differ."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    ref = torch.load(checkpoint_path(reference_dir, state["iteration"]), map_location="cpu", weights_only=True)
    for key in ("fingerprint", "iteration", "generator", "critic", "opt_g", "opt_d", "rng_cpu", "rng_device"):
        _same(state[key], ref[key], key)
    no_wall = [0, 2, 3, 4, 5]  # LOG_COLUMNS without wall_seconds
    _same(state["log"][:, no_wall], ref["log"][:, no_wall], "log")
    return int(state["iteration"])


def _wait_for(predicate, timeout, poll=0.005):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(poll)
    return False


def test_sigkill_at_random_points_resumes_bit_identical(tmp_path, make_shard, tiny_settings, monkeypatch):
    shard = make_shard(label=0, n=32)
    settings = dict(tiny_settings, width=4)
    budget = {"iterations": ITERATIONS, "checkpoint_every": CHECKPOINT_EVERY}

    # The uninterrupted run, in this process (same CPU kernels, one thread), keeping every checkpoint.
    monkeypatch.setattr(ckpt_module, "KEEP", 10**9)
    ref = tmp_path / "reference"
    train_label(
        shard,
        "wcgan",
        settings,
        Budget(**budget),
        0,
        Outputs(generator=ref / "g.pt", log=ref / "log.csv", checkpoints=ref / "ckpt"),
        label=0,
        device="cpu",
        threads=1,
    )
    assert len(list_checkpoints(ref / "ckpt")) == ITERATIONS // CHECKPOINT_EVERY
    last_row = (ref / "log.csv").read_text().splitlines()[-1].split(",")
    seconds_per_iteration = float(last_row[1]) / int(last_row[0])  # training time only (wall_seconds column)

    root = tmp_path / "killed"
    ckpt = root / "ckpt"
    # A progress line after the first few iterations: the kill clock starts when training is under way
    # (a job spends its first seconds importing torch, which is no interesting place to die).
    cmd = train_cmd(shard, root, settings, budget) + ["--progress-seconds", "0.05"]
    rng = random.Random(SEED)
    plan = [
        ("time" if k % 2 == 0 else "write", rng.uniform(0.0, MAX_DELAY)) for k in range(KILLS)
    ]  # (kind, iterations)
    outcomes = []
    k = 0
    while k < len(plan):
        kind, delay = plan[k]
        err_path = tmp_path / f"kill{k}.err"
        with open(err_path, "w") as err:
            proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err)
        try:
            assert _wait_for(lambda: " it/s " in err_path.read_text() or proc.poll() is not None, 120), (  # noqa: B023
                "training never started"
            )
            time.sleep(delay * seconds_per_iteration)
            if kind == "write":  # the next checkpoint write: its temporary file is on disk
                _wait_for(
                    lambda: (
                        any(TEMP.match(n) and int(TEMP.match(n).group(2)) == proc.pid for n in os.listdir(ckpt))  # noqa: B023
                        if ckpt.is_dir()
                        else False
                    ),
                    timeout=5,
                    poll=0.0002,
                )
            proc.kill()
        finally:
            proc.wait()
        killed = proc.returncode == -9
        assert killed or proc.returncode == 0, err_path.read_text()[-2000:]
        left = (
            sorted(n for n in os.listdir(ckpt) if (m := TEMP.match(n)) and int(m.group(2)) == proc.pid)
            if ckpt.is_dir()
            else []
        )
        on_disk = list_checkpoints(ckpt)
        # Whatever the kill hit, what is on disk under a checkpoint's name is whole and on the trajectory.
        iterations = [assert_on_trajectory(path, ref / "ckpt") for _, path in on_disk]
        outcomes.append(
            {
                "kill": k,
                "kind": kind,
                "delay_iterations": round(delay, 2),
                "killed": killed,
                "mid_write": bool(left),
                "latest_checkpoint": iterations[0] if iterations else None,
            }
        )
        assert not (root / "g.pt").exists() or not killed or iterations[0] == ITERATIONS
        k += 1
        if k == len(plan) and not any(o["mid_write"] for o in outcomes) and len(plan) < KILLS + EXTRA_WRITE_KILLS:
            plan.append(("write", rng.uniform(0.0, MAX_DELAY)))

    final = subprocess.run(cmd, capture_output=True, text=True)
    assert final.returncode == 0, final.stderr[-3000:]
    latest = outcomes[-1]["latest_checkpoint"]
    if latest is not None and latest < ITERATIONS:
        assert f"resuming from checkpoint at iteration {latest}" in final.stderr
    gen, _ = load_generator(root / "g.pt")
    want, _ = load_generator(ref / "g.pt")
    _same(gen.state_dict(), want.state_dict(), "generator")
    col = lambda p: [line.split(",")[0] for line in p.read_text().splitlines()]  # noqa: E731
    assert col(root / "log.csv") == col(ref / "log.csv")
    # The rerun removed what the kills left half-written; the last two checkpoints remain.
    assert not [n for n in os.listdir(ckpt) if n.startswith(".") and n != LOCK_NAME]  # the lock file stays
    assert [i for i, _ in list_checkpoints(ckpt)] == [ITERATIONS, ITERATIONS - CHECKPOINT_EVERY]

    landed = [o for o in outcomes if o["killed"]]
    mid_write = [o for o in landed if o["mid_write"]]
    summary = {
        "kill_points": len(outcomes),
        "landed": len(landed),
        "mid_write": len(mid_write),
        "bit_identical": True,
        "seconds_per_iteration": round(seconds_per_iteration, 4),
        "outcomes": outcomes,
    }
    print("\nkill summary:", json.dumps(summary))
    (tmp_path / "kill_summary.json").write_text(json.dumps(summary, indent=1))
    assert len(landed) >= KILLS - 2, summary  # nearly every kill hit a running job
    assert mid_write, f"no kill landed inside a checkpoint write: {summary}"
