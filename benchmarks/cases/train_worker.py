"""Subprocess for the packed-vs-separate cases: import, then train on 'go' and report the seconds.

Argument: JSON {mode: separate|packed, shards, labels, model, settings, iterations, threads,
channels_last, root, and optionally device (default 'cpu'), packed_kernel (default 'auto'),
warmup_iterations (default 0) and serve (default false)}.
Prints 'ready' once imported (and warmed up), waits for a line on stdin, trains with
`labelwise.train.train_job` (separate: one job per label, K=1, one after the other; packed: one job
of all its labels), prints 'done <seconds> <peak bytes>' (peak: torch.cuda.max_memory_allocated on
a CUDA device, else 0).  The wait keeps interpreter and torch start-up out of the comparison: the
runner starts its clock when every worker of a variant is ready.  With warmup_iterations > 0 the
worker first trains the same labels that many iterations into <root>/warmup (deleted again) before
it says 'ready', so that a GPU's context creation, kernel loading and cuDNN set-up are not timed
either; on a GPU the device is synchronised before and after the timed training.  With serve: true
the worker stays for more runs: after 'done' it moves its outputs to <root>.last (so each run starts
afresh, never a resume, and the last run's outputs stay to be checked), says 'ready' again and waits
for the next 'go'; end of input (or any other line) ends it.
"""

import json
import shutil
import sys
import time
from pathlib import Path

import torch

from labelwise.device import select_device
from labelwise.train import Budget, Outputs, train_job

a = json.loads(sys.argv[1])
torch.set_num_threads(a["threads"])
device = a.get("device", "cpu")
dev = select_device(device)
root = Path(a["root"])


def outputs(where: Path) -> list:
    return [Outputs(where / f"g{k}.pt", where / f"log{k}.csv", where / f"ckpt{k}") for k in a["labels"]]


def train(iterations: int, outs: list) -> None:
    budget = Budget(iterations=iterations, checkpoint_every=a["checkpoint_every"])
    # separate: one job per label (K=1), one after the other; packed: one job of all the labels.
    jobs = [([s], [k], [o]) for s, k, o in zip(a["shards"], a["labels"], outs)]
    if a["mode"] == "packed":
        jobs = [(a["shards"], a["labels"], outs)]
    for shards, labels, job_outputs in jobs:
        train_job(
            shards,
            a["model"],
            a["settings"],
            budget,
            0,
            job_outputs,
            labels=labels,
            device=device,
            threads=a["threads"],
            progress_seconds=1e9,
            channels_last=a.get("channels_last", False),
            packed_kernel=a.get("packed_kernel", "auto"),
        )


def sync() -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


if a.get("warmup_iterations"):
    train(int(a["warmup_iterations"]), outputs(root / "warmup"))
    shutil.rmtree(root / "warmup", ignore_errors=True)
if dev.type == "cuda":
    sync()
    torch.cuda.reset_peak_memory_stats(dev)
serve = bool(a.get("serve"))
print("ready", flush=True)
while True:
    line = sys.stdin.readline()
    if serve and line.strip() != "go":
        break
    sync()
    t0 = time.perf_counter()
    train(a["iterations"], outputs(root))
    sync()
    seconds = time.perf_counter() - t0
    peak = torch.cuda.max_memory_allocated(dev) if dev.type == "cuda" else 0
    print(f"done {seconds:.6f} {peak}", flush=True)
    if not serve:
        break
    last = root.with_name(root.name + ".last")  # kept for the runner to check, the next run starts afresh
    shutil.rmtree(last, ignore_errors=True)
    if root.exists():
        root.rename(last)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    print("ready", flush=True)
