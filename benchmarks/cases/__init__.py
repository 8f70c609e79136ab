"""Benchmark cases: each module has `NAME`, `DESCRIPTION` and `run(ctx) -> list[harness.Row]`."""

from . import dag, engine, evaluate, gpu, inception, packed, prepare, shards, train_step

CASES = {m.NAME: m for m in (train_step, packed, shards, dag, inception, evaluate, gpu, engine, prepare)}
