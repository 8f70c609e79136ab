"""GPU slots without a scheduler (labelwise.device.claim_gpu / select_device), testable on a CPU.

Processes stand in for concurrent Snakemake jobs on a multi-GPU workstation: each claims a slot
with an exclusive flock on a per-GPU lock file and holds it while it lives.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time

import pytest
import torch

from labelwise import device as lw_device
from labelwise.device import claim_gpu, select_device
from labelwise.errors import LabelwiseError

# A stand-in job: waits for the go file (so that all start together), claims a slot of N, prints
# its index, then holds the slot until its stdin closes.
HOLDER = """
import os, sys, time
from labelwise.device import claim_gpu
n, lock_dir, go = int(sys.argv[1]), sys.argv[2], sys.argv[3]
while not os.path.exists(go):
    time.sleep(0.005)
index, handle = claim_gpu(n, lock_dir, poll_seconds=0.05, timeout=120)
print(index, flush=True)
sys.stdin.read()
"""


def start_holders(count, n_devices, lock_dir, go):
    return [
        subprocess.Popen(
            [sys.executable, "-c", HOLDER, str(n_devices), str(lock_dir), str(go)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(count)
    ]


def read_index(proc, timeout=120.0):
    result = {}
    reader = threading.Thread(target=lambda: result.setdefault("line", proc.stdout.readline()), daemon=True)
    reader.start()
    reader.join(timeout)
    assert "line" in result and result["line"].strip(), f"holder pid {proc.pid} printed no slot"
    return int(result["line"])


def stop(procs):
    for p in procs:
        if p.poll() is None:
            p.stdin.close()
    for p in procs:
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def test_concurrent_processes_get_distinct_slots(tmp_path):
    go = tmp_path / "go"
    procs = start_holders(4, 4, tmp_path / "locks", go)
    try:
        time.sleep(0.5)  # let every process import torch and reach the barrier
        go.touch()
        indices = [read_index(p) for p in procs]
        assert sorted(indices) == [0, 1, 2, 3], indices
    finally:
        stop(procs)


def test_third_process_waits_for_a_released_slot(tmp_path):
    go = tmp_path / "go"
    go.touch()
    procs = start_holders(2, 2, tmp_path / "locks", go)
    try:
        first = sorted(read_index(p) for p in procs)
        assert first == [0, 1]
        late = start_holders(1, 2, tmp_path / "locks", go)[0]
        procs.append(late)
        time.sleep(1.0)
        assert late.poll() is None  # still waiting: both slots are held
        holder_of_1 = next(p for p in procs[:2] if p.poll() is None)
        stop([holder_of_1])
        assert read_index(late) in (0, 1)
    finally:
        stop(procs)


def test_released_slot_is_reusable(tmp_path):
    i0, h0 = claim_gpu(2, tmp_path)
    i1, h1 = claim_gpu(2, tmp_path)  # flock: another open file excludes even within one process
    assert (i0, i1) == (0, 1)
    with pytest.raises(LabelwiseError, match="all 2 GPUs are claimed"):
        claim_gpu(2, tmp_path, poll_seconds=0.05, timeout=0.2)
    h0.close()
    i2, h2 = claim_gpu(2, tmp_path, timeout=1)
    assert i2 == 0
    for h in (h1, h2):
        h.close()


def test_waiting_claim_logs_and_gets_the_slot(tmp_path, caplog):
    _, held = claim_gpu(1, tmp_path)
    threading.Timer(0.5, held.close).start()
    with caplog.at_level(logging.INFO, logger="labelwise.device"):
        index, handle = claim_gpu(1, tmp_path, poll_seconds=0.05, timeout=10)
    handle.close()
    assert index == 0
    assert "all 1 GPUs are claimed by other labelwise processes" in caplog.text
    assert "--resources gpu=1" in caplog.text
    assert "GPU slot 0 is free now" in caplog.text


def test_sigkilled_process_releases_its_slot(tmp_path):
    go = tmp_path / "go"
    go.touch()
    (proc,) = start_holders(1, 1, tmp_path / "locks", go)
    try:
        assert read_index(proc) == 0
        with pytest.raises(LabelwiseError):
            claim_gpu(1, tmp_path / "locks", poll_seconds=0.05, timeout=0.3)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        index, handle = claim_gpu(1, tmp_path / "locks", timeout=2)
        assert index == 0
        handle.close()
    finally:
        stop([proc])


def test_lock_names_and_holder_pid(tmp_path):
    index, handle = claim_gpu(2, tmp_path, names=["GPU-aa/bb", "GPU-cc"])
    assert index == 0
    assert (tmp_path / "gpu-GPU-aa_bb.lock").read_text() == f"pid {os.getpid()}\n"
    handle.close()


def test_default_lock_dir_is_per_user(monkeypatch, tmp_path):
    monkeypatch.delenv("LABELWISE_GPU_LOCK_DIR", raising=False)
    assert str(lw_device.default_lock_dir()) == f"/tmp/labelwise-gpu-locks-{os.getuid()}"
    monkeypatch.setenv("LABELWISE_GPU_LOCK_DIR", str(tmp_path / "x"))
    assert lw_device.default_lock_dir() == tmp_path / "x"


@pytest.mark.skipif(os.getuid() != 0, reason="needs root to give the lock directory to another user")
def test_foreign_lock_dir_is_refused(tmp_path):
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    os.chown(foreign, 65534, 65534)
    with pytest.raises(LabelwiseError, match="belongs to uid 65534"):
        claim_gpu(1, foreign)


@pytest.fixture
def fake_gpus(monkeypatch, tmp_path):
    """Pretend torch sees `n` GPUs (the claim logic only asks torch how many there are)."""

    def make(n):
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: n)
        monkeypatch.setattr(
            torch.cuda, "get_device_properties", lambda i: (_ for _ in ()).throw(RuntimeError("no CUDA"))
        )
        lw_device.release_gpu_claim()
        monkeypatch.setenv("LABELWISE_GPU_LOCK_DIR", str(tmp_path / "locks"))
        return tmp_path / "locks"

    yield make
    lw_device.release_gpu_claim()


def test_select_device_claims_one_slot_per_process(fake_gpus):
    locks = fake_gpus(3)
    _, other = claim_gpu(3, locks)  # another job already holds slot 0
    try:
        assert select_device("cuda") == torch.device("cuda:1")
        assert select_device("auto") == torch.device("cuda:1")  # the same slot, not a second one
        assert select_device("cuda:2") == torch.device("cuda:2")  # an explicit index is taken as given
        with pytest.raises(LabelwiseError, match="only 3 CUDA device"):
            select_device("cuda:3")
        lw_device.release_gpu_claim()  # slot 1 is free again: the next claim gets it
        index, again = claim_gpu(3, locks)
        again.close()
        assert index == 1
    finally:
        other.close()


def test_one_visible_gpu_is_used_without_a_lock(fake_gpus):
    locks = fake_gpus(1)  # a scheduler narrowed the job to one GPU (CUDA_VISIBLE_DEVICES=<one>)
    assert select_device("cuda") == torch.device("cuda:0")
    assert select_device("auto") == torch.device("cuda:0")
    assert not locks.exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_cuda_is_an_error_not_cpu():
    with pytest.raises(LabelwiseError, match="no CUDA GPU is usable here"):
        select_device("cuda")
    assert select_device("auto") == torch.device("cpu")
    with pytest.raises(LabelwiseError, match="must be 'auto', 'cpu'"):
        select_device("gpu")
