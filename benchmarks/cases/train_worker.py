"""Subprocess for the packed-vs-separate cases: import, then train on 'go' and report the seconds.

Argument: JSON {mode: separate|packed|separate-packed1, shards, labels, model, settings, iterations, threads,
channels_last, root, and optionally device (default 'cpu'), warmup_iterations (default 0) and serve
(default false)}.
Prints 'ready' once imported (and warmed up), waits for a line on stdin, trains (each label
in turn with train_label, or all of them with one train_packed), prints 'done <seconds> <peak bytes>'
(peak: torch.cuda.max_memory_allocated on a CUDA device, else 0).  separate-packed1 trains each label alone
through train_packed (K=1: the plain network), the only way to run one label's network in
channels_last layout without changing train_label.  The
wait keeps interpreter and torch start-up out of the comparison: the runner starts its clock
when every worker of a variant is ready.  With warmup_iterations > 0 the worker first trains the
same labels that many iterations into <root>/warmup (deleted again) before it says 'ready', so
that a GPU's context creation, kernel loading and cuDNN set-up are not timed either; on a GPU the
device is synchronised before and after the timed training.  With serve: true the worker stays
for more runs: after 'done' it moves its outputs to <root>.last (so each run starts afresh, never a
resume, and the last run's outputs stay to be checked), says
'ready' again and waits for the next 'go'; end of input (or any other line) ends it.
"""

import json
import shutil
import sys
import time
from pathlib import Path

import torch

from labelwise.device import select_device
from labelwise.train import Budget, Outputs, train_label
from labelwise.train.packed import train_packed

a = json.loads(sys.argv[1])
torch.set_num_threads(a["threads"])
device = a.get("device", "cpu")
dev = select_device(device)
root = Path(a["root"])


def outputs(where: Path) -> list:
    return [Outputs(where / f"g{k}.pt", where / f"log{k}.csv", where / f"ckpt{k}") for k in a["labels"]]


def train(iterations: int, outs: list) -> None:
    budget = Budget(iterations=iterations, checkpoint_every=a["checkpoint_every"])
    if a["mode"] == "packed":
        train_packed(
            a["shards"],
            a["model"],
            a["settings"],
            budget,
            0,
            outs,
            labels=a["labels"],
            device=device,
            threads=a["threads"],
            progress_seconds=1e9,
            channels_last=a["channels_last"],
            packed_kernel=a.get("packed_kernel", "auto"),
        )
    elif a["mode"] == "separate-packed1":  # one label at a time through train_packed: K=1 is a plain network
        for shard, label, out in zip(a["shards"], a["labels"], outs):
            train_packed(
                [shard],
                a["model"],
                a["settings"],
                budget,
                0,
                [out],
                labels=[label],
                device=device,
                threads=a["threads"],
                progress_seconds=1e9,
                channels_last=a["channels_last"],
            )
    else:
        for shard, label, out in zip(a["shards"], a["labels"], outs):
            train_label(
                shard,
                a["model"],
                a["settings"],
                budget,
                0,
                out,
                label=label,
                device=device,
                threads=a["threads"],
                progress_seconds=1e9,
                channels_last=a.get("channels_last", False),
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
