"""Subprocess for the packed-vs-separate case: import, then train on 'go' and report the seconds.

Argument: JSON {mode: separate|packed|separate-packed1, shards, labels, model, settings, iterations, threads,
channels_last, root}.  Prints 'ready' once imported, waits for a line on stdin, trains (each label
in turn with train_label, or all of them with one train_packed), prints 'done <seconds>'.  separate-packed1 trains each label alone
through train_packed (K=1: the plain network), the only way to run one label's network in
channels_last layout without changing train_label.  The
wait keeps interpreter and torch start-up out of the comparison: the runner starts its clock
when every worker of a variant is ready.
"""
import json
import sys
import time
from pathlib import Path

import torch

from labelwise.train import Budget, Outputs, train_label
from labelwise.train.packed import train_packed

a = json.loads(sys.argv[1])
torch.set_num_threads(a["threads"])
root = Path(a["root"])
outs = [Outputs(root / f"g{k}.pt", root / f"log{k}.csv", root / f"ckpt{k}") for k in a["labels"]]
budget = Budget(iterations=a["iterations"], checkpoint_every=a["checkpoint_every"])
print("ready", flush=True)
sys.stdin.readline()
t0 = time.perf_counter()
if a["mode"] == "packed":
    train_packed(a["shards"], a["model"], a["settings"], budget, 0, outs, labels=a["labels"], device="cpu",
                 threads=a["threads"], progress_seconds=1e9, channels_last=a["channels_last"])
elif a["mode"] == "separate-packed1":  # one label at a time through train_packed: K=1 is a plain network
    for shard, label, out in zip(a["shards"], a["labels"], outs):
        train_packed([shard], a["model"], a["settings"], budget, 0, [out], labels=[label], device="cpu",
                     threads=a["threads"], progress_seconds=1e9, channels_last=a["channels_last"])
else:
    for shard, label, out in zip(a["shards"], a["labels"], outs):
        train_label(shard, a["model"], a["settings"], budget, 0, out, label=label, device="cpu",
                    threads=a["threads"], progress_seconds=1e9)
print(f"done {time.perf_counter() - t0:.6f}", flush=True)
