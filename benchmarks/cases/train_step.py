"""Case a: labelwise's training loop vs a plain PyTorch loop, and CPU speed options for the step.

`overhead`: a whole one-label `train_job` call (shard read, networks, N iterations, final
checkpoint, generator and log written) vs `plain.plain_train` doing the same work with a bare loop (shard
read, networks, N iterations, generator saved), on a real mnist5k shard with the configured
mnist5k CPU settings, 1 thread (the pipeline's default per job).

`options`: steady-state iterations of the plain loop (after warm-up) with one change each —
channels_last memory format, torch.compile (DCGAN only: compiled graphs cannot be differentiated
twice, which the WGAN-GP gradient penalty needs), 2 threads instead of 1 — vs the plain NCHW
eager loop.  These are measurements for choosing defaults; labelwise's defaults are not changed.
"""

from __future__ import annotations

import shutil

import torch
from harness import compare, timed

from .plain import PlainGAN, plain_train

NAME = "train_step"
CANDIDATE = "labelwise train_job, 1 label"  # until issue 22: "labelwise train_label" (its own loop)
DESCRIPTION = "labelwise train_job (one label) vs plain PyTorch loop (+ channels_last / torch.compile / threads)"


def run(ctx) -> list:
    from labelwise.train import Budget, Outputs, train_job

    rows = []
    shard = ctx.shard(0)
    torch.set_num_threads(1)
    for model in ("wcgan", "dccgan"):
        settings = ctx.config["models"][model]
        n = {"wcgan": 8, "dccgan": 40}[model] if not ctx.quick else {"wcgan": 2, "dccgan": 6}[model]
        root = ctx.tmp / f"train_step-{model}"

        def candidate(model=model, settings=settings, n=n, root=root):
            shutil.rmtree(root, ignore_errors=True)  # a fresh run each time, never a resume
            out = Outputs(root / "g.pt", root / "log.csv", root / "ckpt")
            train_job(
                [shard],
                model,
                settings,
                Budget(iterations=n, checkpoint_every=ctx.config["budget"]["checkpoint_every"]),
                0,
                [out],
                device="cpu",
                threads=1,
                progress_seconds=1e9,
            )

        def reference(model=model, settings=settings, n=n, root=root):
            root.mkdir(parents=True, exist_ok=True)
            plain_train(shard, model, settings, n, root / "plain.pt")

        rows += compare(
            f"a.overhead/{model}",
            ("plain PyTorch loop", timed(reference)),
            {CANDIDATE: timed(candidate)},
            repeats=ctx.repeats(4),
            warmup=1,
            notes={CANDIDATE: f"{n} iterations, 1 thread, whole call"},
            log=ctx.log,
        )
        rows[-1].extra = {"iterations": n, "settings": settings}

    for model in ("wcgan", "dccgan"):
        settings = ctx.config["models"][model]
        n = {"wcgan": 3, "dccgan": 20}[model] if not ctx.quick else {"wcgan": 1, "dccgan": 4}[model]
        base = PlainGAN(shard, model, settings)
        variants = {"channels_last": PlainGAN(shard, model, settings, channels_last=True)}
        if model == "dccgan" and not ctx.quick:
            variants["torch.compile"] = PlainGAN(shard, model, settings, compile=True)
            variants["torch.compile + channels_last"] = PlainGAN(
                shard, model, settings, compile=True, channels_last=True
            )
        for gan in (base, *variants.values()):
            gan.timed_steps(2)  # warm-up: allocator, oneDNN primitive caches, compilation

        def per_iteration(gan, threads, n):
            def run_once():
                torch.set_num_threads(threads)
                try:
                    return gan.timed_steps(n) / n
                finally:
                    torch.set_num_threads(1)

            return run_once

        candidates = {name: per_iteration(gan, 1, n) for name, gan in variants.items()}
        # Fewer iterations: on a loaded machine two threads can be many times slower (see docs).
        n2 = max(1, n // 3)
        candidates["2 threads"] = per_iteration(base, 2, n2)
        notes = {k: f"seconds per iteration, {n} steady-state iterations per repeat" for k in variants}
        notes["2 threads"] = f"seconds per iteration, {n2} steady-state iterations per repeat"
        if model == "wcgan":
            notes["channels_last"] += "; torch.compile: not applicable (no double backward through compiled graphs)"
        rows += compare(
            f"a.options/{model}",
            ("plain NCHW eager, 1 thread", per_iteration(base, 1, n)),
            candidates,
            repeats=ctx.repeats(3),
            log=ctx.log,
            notes=notes,
        )
    return rows
