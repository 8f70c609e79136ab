"""One writer per checkpoint folder, and stops that keep the work (issue 16 points 6 and 8).

* A second `labelwise train` on a checkpoint folder in use stops at once, naming the holder's process
  id and host, and leaves the first job's checkpoints alone (before: it deleted them, both exited 0).
  The lock dies with its process: after a SIGKILL the next job takes the folder.
* A packed run given one checkpoint folder (or generator path) for two labels is refused up front.
* Ctrl-C (SIGINT) checkpoints and stops like SIGTERM: one line, no traceback, and the rerun ends
  bit-identical to a run that was never interrupted.
* A checkpoint write that fails before any checkpoint exists says that a rerun starts afresh (it
  said "no earlier checkpoint exists and a rerun resumes from it").
"""

from __future__ import annotations

import errno
import json
import signal
import socket
import subprocess
import time

import pytest
import torch
from conftest import train_cmd

import labelwise.train.checkpoint as checkpoint
from labelwise import cli
from labelwise.errors import LabelwiseError
from labelwise.train import Budget, Outputs, load_generator, train_job
from labelwise.train.checkpoint import list_checkpoints, save_checkpoint
from labelwise.train.writers import LOCK_NAME

pytestmark = pytest.mark.faults


def start(cmd) -> tuple[subprocess.Popen, list[str]]:
    """Start a training process and wait for its first progress line (training under way)."""
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
    seen = []
    for line in proc.stderr:
        seen.append(line)
        if "it/s" in line:
            return proc, seen
    raise AssertionError("".join(seen))


def test_second_writer_stops_at_once_naming_the_holder_and_the_lock_dies_with_its_process(
    tmp_path, make_shard, tiny_settings
):
    shard = make_shard(label=0)
    first, seen = start(train_cmd(shard, tmp_path, tiny_settings, {"iterations": 10**6, "checkpoint_every": 5}))
    try:
        deadline = time.monotonic() + 60
        while not list_checkpoints(tmp_path / "ckpt") and time.monotonic() < deadline:
            time.sleep(0.05)
        assert list_checkpoints(tmp_path / "ckpt")
        other_lr = dict(tiny_settings, lr=5e-4)  # another fingerprint: it would discard the first's checkpoints
        second = subprocess.run(
            train_cmd(shard, tmp_path, other_lr, {"iterations": 20, "checkpoint_every": 5}),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert first.poll() is None, "the first job must still be running"
        errors = [line for line in second.stderr.splitlines() if " ERROR " in line]
        assert second.returncode == 1 and len(errors) == 1 and "Traceback" not in second.stderr, second.stderr
        assert (
            f"{tmp_path / 'ckpt'}: checkpoint folder in use by pid {first.pid} on host {socket.gethostname()}"
            in errors[0]
        ), errors[0]
        assert "discarding" not in second.stderr and list_checkpoints(tmp_path / "ckpt")  # left alone
        assert not (tmp_path / "g.pt").exists()
    finally:
        first.send_signal(signal.SIGKILL)
        first.communicate(timeout=60)
    # The kernel dropped the lock with the process: the next job takes the folder (and, with other
    # settings, starts afresh), and the lock file now names it.
    third = subprocess.run(
        train_cmd(shard, tmp_path, other_lr, {"iterations": 10, "checkpoint_every": 5}),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert third.returncode == 0, third.stderr[-2000:]
    assert "discarding" in third.stderr and (tmp_path / "g.pt").exists()
    assert (tmp_path / "ckpt" / LOCK_NAME).read_text().startswith("pid ")


@pytest.mark.parametrize("shared", ["checkpoints", "generator"])
def test_packed_run_with_one_path_for_two_labels_is_refused_up_front(tmp_path, tiny_settings, shared):
    outs = [
        Outputs(generator=tmp_path / f"g{k}.pt", log=tmp_path / f"l{k}.csv", checkpoints=tmp_path / f"c{k}")
        for k in (0, 1)
    ]
    setattr(outs[1], shared, getattr(outs[0], shared))
    missing = [tmp_path / "no-such-shard-0.h5", tmp_path / "no-such-shard-1.h5"]  # never read: refused before
    with pytest.raises(LabelwiseError, match=f"is given as the --{shared} of label 0 and the --{shared} of label 1"):
        train_job(missing, "wcgan", tiny_settings, Budget(iterations=2), 0, outs, labels=[0, 1], threads=1)
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # nothing written, not even a lock
    # The command line says the same, in one line.
    args = [
        "train",
        "--model",
        "wcgan",
        "--label",
        "0",
        "1",
        "--settings",
        json.dumps({"model": tiny_settings, "budget": {"iterations": 2}, "seed": 0}),
        "--shard",
        *map(str, missing),
        "--log",
        str(tmp_path / "a.csv"),
        str(tmp_path / "b.csv"),
        "--generator",
        str(outs[0].generator),
        str(outs[1].generator),
        "--checkpoints",
        str(outs[0].checkpoints),
        str(outs[1].checkpoints),
    ]
    assert cli.main(args) == 1


def test_sigint_checkpoints_and_stops_like_sigterm_and_the_rerun_is_bit_identical(tmp_path, make_shard, tiny_settings):
    shard = make_shard(label=0)
    budget = {"iterations": 600, "checkpoint_every": 10**6}  # checkpoints only when stopped
    straight = tmp_path / "straight"
    subprocess.run(train_cmd(shard, straight, tiny_settings, budget), check=True, capture_output=True, timeout=300)

    stopped = tmp_path / "stopped"
    proc, seen = start(train_cmd(shard, stopped, tiny_settings, budget))
    proc.send_signal(signal.SIGINT)  # what Ctrl-C sends
    _, rest = proc.communicate(timeout=60)
    err = "".join(seen) + rest
    errors = [line for line in err.splitlines() if " ERROR " in line]
    assert proc.returncode == 1 and "Traceback" not in err and "KeyboardInterrupt" not in err, err[-2000:]
    assert len(errors) == 1 and "stopped by signal 2" in errors[0] and "rerun to resume" in errors[0], errors
    ((iteration, _),) = list_checkpoints(stopped / "ckpt")
    assert 0 < iteration < budget["iterations"], "the signal must land mid-run"

    rerun = subprocess.run(
        train_cmd(shard, stopped, tiny_settings, budget), capture_output=True, text=True, timeout=300
    )
    assert rerun.returncode == 0 and f"resuming from checkpoint at iteration {iteration}" in rerun.stderr
    a, b = load_generator(straight / "g.pt")[0].state_dict(), load_generator(stopped / "g.pt")[0].state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_failed_first_checkpoint_says_a_rerun_starts_afresh(tmp_path, monkeypatch):
    def full_disk(obj, path):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoint, "save_torch", full_disk)
    state = {"generator": {"w": torch.zeros(2)}, "critic": {"w": torch.zeros(2)}}
    with pytest.raises(LabelwiseError) as err:
        save_checkpoint(tmp_path / "ckpt", 2, state)
    message = str(err.value)
    assert "no earlier checkpoint exists and a rerun starts this label from the beginning" in message
    assert "resumes from it" not in message
