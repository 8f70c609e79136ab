"""The training loop: one function, `train_job`, trains every training job, resumable bit for bit.

A job's members are either K ≥ 1 labels of a per-label model (runtime.labels_per_job; K=1 is the
papers' one job per label) or the one conditional model over all selected labels.  The loop runs
the training iteration (`labelwise.train.engine.TrainingIteration`) on the job's networks until the
budget (generator iterations, counted GFLOP or wall-clock minutes, whichever ends first:
`labelwise.train.compute.Budget`) is spent, and keeps the books: log rows, divergence checks,
snapshots, checkpoints every N iterations and on a signal, progress lines, and at the end each
member's generator file, training log and snapshot bundle.

Everything that shapes the trajectory is restored on resume (`labelwise.train.checkpoint.JobState`):
weights, optimizer moments, the generator average, the iteration, elapsed time, the log rows and
pending diagnostics, and every member's random streams — so a run that was killed and resumed ends
with the same weights and log as one that never stopped (exactly so on the CPU).  Members never
exchange anything: a label packed with others ends where its own job would, up to rounding.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import torch

from .. import losses, models
from ..device import select_device, set_threads
from ..errors import LabelwiseError
from ..seeds import CONDITIONAL_SEED_LABEL
from ..training_record import training_record
from ..trainlog import write_log
from . import compute
from .augment import policy_of
from .checkpoint import JobState, delete_checkpoints, list_snapshots, load_resumable, save_snapshot
from .common import Cadence, StopRequest, divergence_error, first_names, training_fingerprint
from .compute import Budget
from .data import check_job_memory, read_job_data
from .ema import GeneratorEMA, ema_decay
from .engine import PRECISIONS, TrainingIteration, label_generators
from .generator_files import generator_payload, write_generator, write_snapshot_bundle
from .networks import job_networks
from .packed_layers import kernel_for
from .writers import one_writer

log = logging.getLogger("labelwise.train")

CUDA_GRAPH = ("auto", "on", "off")


@dataclass
class Outputs:
    generator: Path
    log: Path
    checkpoints: Path
    snapshots: Path | None = None  # the bundle of this member's generator snapshots (budget.snapshots)


@dataclass
class TrainResult:
    iterations: int
    seconds: float
    resumed_from: int
    stopped_by: str  # "gflop" or "iterations" (the planned iterations, set by that limit), or "minutes"
    log_rows: list = field(default_factory=list)


@dataclass
class Member:
    """One member of a job, with its own files, seed, streams, log and training time: a label of a
    per-label model, or the conditional model over all of its labels."""

    name: str  # "label 3" or "labels 0,1,2" (the conditional model)
    label: int | list[int]  # what its generator file names: its label, or the conditional model's labels
    seed_label: int  # its seed slot (labelwise.seeds)
    fingerprint: str
    outputs: Outputs
    rows: list = field(default_factory=list)
    elapsed: float = 0.0
    taken: set = field(default_factory=set)  # iterations of the snapshots it holds

    @property
    def checkpoints(self) -> Path:
        return self.outputs.checkpoints


def resolve_runtime(k: int, conditional: bool, device: torch.device, packed_kernel: str, cuda_graph: str):
    """(kernel, CUDA graph on?) for a job of K members on `device`.  `auto` keeps each job kind on what
    has been run: the grouped kernel and eager execution for one label and for the conditional model;
    for K > 1 labels, the bmm kernel and a CUDA graph on CUDA (docs/packed-training.md)."""
    if cuda_graph not in CUDA_GRAPH:
        raise LabelwiseError(f"runtime.cuda_graph must be one of {', '.join(CUDA_GRAPH)}, got {cuda_graph!r}")
    kernel = kernel_for(packed_kernel, device)  # checks the value too
    if packed_kernel == "auto" and (k == 1 or conditional):
        kernel = "grouped"
    graph = device.type == "cuda" and (cuda_graph == "on" or (cuda_graph == "auto" and k > 1 and not conditional))
    return (None if conditional else kernel), graph


def resume_states(members: list[Member], max_iteration: int) -> list[dict] | None:
    """Each member's checkpoint at one common iteration (the newest all of them have), or None.

    A job saves every member at the same iterations, so after a kill mid-save the members saved
    last are one checkpoint behind and their previous one (checkpoints keep two) is common ground.
    A member with nothing to resume makes the whole job start afresh.
    """
    limit = max_iteration
    while True:
        states = [load_resumable(m.checkpoints, m.fingerprint, limit) for m in members]
        if all(s is None for s in states):
            return None
        if any(s is None for s in states):
            limit = 0  # clears the others' checkpoints, as a fresh start of one member would
            continue
        iterations = {int(s["iteration"]) for s in states}
        if len(iterations) == 1:
            return states
        limit = min(iterations)  # strictly smaller each round: terminates
        log.info(
            "%s have checkpoints at different iterations %s; resuming all from %d",
            ", ".join(m.name for m in members),
            sorted(iterations),
            limit,
        )


def _nonfinite_by_member(k: int, state_dicts: dict[str, dict]) -> list[list[str]]:
    """For each member, '<network>.<tensor>' of its floating-point tensors holding a NaN or Inf, read
    off the job's packed tensors without unpacking them (one device synchronisation)."""
    names, flags = [], []
    for network, sd in state_dicts.items():
        for key, value in sd.items():
            if isinstance(value, torch.Tensor) and value.is_floating_point() and value.dim() > 0:
                names.append(f"{network}.{key}")
                flags.append(torch.isfinite(value.reshape(k, -1)).all(1))
    ok = torch.stack(flags).cpu().tolist() if flags else []
    return [[name for name, row in zip(names, ok) if not row[j]] for j in range(k)]


@one_writer  # distinct outputs per member, and this job the only writer of its checkpoint folders
def train_job(
    shards: list,
    model: str,
    settings: dict,
    budget: Budget,
    seed: int,
    outputs: list[Outputs],
    *,
    labels: list[int] | None = None,
    device: str = "auto",
    threads: int | None = None,
    progress_seconds: float = 5.0,
    channels_last: bool = False,
    precision: str = "fp32",
    packed_kernel: str = "auto",
    cuda_graph: str = "auto",
) -> list[TrainResult]:
    """Train `model` with `settings` for `budget`; write each member's generator, log and snapshots.

    A per-label model trains one member per shard (`labels[k]`, if given, checked against shard k),
    all K as one packed computation, each exactly as its own job would up to rounding (K=1: exactly);
    a conditional model trains one member, its class-conditional network over all `shards`.
    `outputs`: one per member.  Runtime options change how, never what, is computed (up to rounding):
    `channels_last` (NHWC convolutions), `precision` ('fp32', 'bf16' forward passes),
    `packed_kernel` ('auto', 'grouped', 'bmm': `labelwise.train.packed_layers`) and `cuda_graph`
    ('auto', 'on', 'off': `resolve_runtime`); none of them changes the checkpoint format.
    """
    conditional = models.get(model).conditional
    n_members = 1 if conditional else len(shards)
    if not shards or len(outputs) != n_members or (labels is not None and not conditional and len(labels) != n_members):
        raise LabelwiseError(
            f"train {model}: needs one Outputs per {'job' if conditional else 'shard'} (and a label per shard, "
            f"if given); got {len(shards)} shards, {len(outputs)} outputs, "
            f"{'no' if labels is None else len(labels)} labels"
        )
    if precision not in PRECISIONS:
        raise LabelwiseError(f"runtime.precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    set_threads(threads)
    dev = select_device(device)
    check_job_memory(model, settings, shards, dev, conditional)
    data = read_job_data(shards, None if conditional else labels, conditional, dev)
    kernel, graph = resolve_runtime(n_members, conditional, dev, packed_kernel, cuda_graph)
    if conditional:
        labels_text = ",".join(map(str, data.labels))
        seed_labels, names, file_labels = [CONDITIONAL_SEED_LABEL], [f"labels {labels_text}"], [data.labels]
    else:
        seed_labels, names, file_labels = data.labels, [f"label {k}" for k in data.labels], data.labels
    who = f"[{model} {names[0]}]" if n_members == 1 else f"[{model} labels {','.join(map(str, data.labels))}]"
    members = [
        Member(name, label, slot, training_fingerprint(model, settings, seed, slot, checksum), out)
        for name, label, slot, checksum, out in zip(names, file_labels, seed_labels, data.checksums, outputs)
    ]
    channels, height, width = data.shape
    resolution = data.resolution
    bs, latent_dim, critic_steps = (
        int(settings["batch_size"]),
        int(settings["latent_dim"]),
        int(settings["critic_steps"]),
    )
    flops = compute.label_iteration_flops(model, settings, channels, resolution, len(data.labels))
    # budget.gflop -> iterations, fixed before anything is resumed; which limit set them goes in the log
    plan = compute.plan_iterations(budget, flops, len(data.labels) if conditional else 1)
    budget = plan.budget
    # Where this job runs and which budget sets its iterations, in one line: the evidence that
    # concurrent jobs got distinct GPUs, and of a compute budget that buys next to nothing.
    how = f"{'conditional' if conditional else f'{n_members} label(s)'}, {precision}"
    how += f", {kernel} kernel" if kernel else ""
    how += ", CUDA graph" if graph else ""
    log.info(
        "%s device %s, %d thread(s), CUDA_VISIBLE_DEVICES=%s, host %s, start %s (%s); budget: %s",
        who,
        dev,
        torch.get_num_threads(),
        os.environ.get("CUDA_VISIBLE_DEVICES", "<unset>"),
        socket.gethostname(),
        datetime.now().astimezone().isoformat(timespec="milliseconds"),
        how,
        plan.text,
    )
    if plan.warning:
        log.warning("%s %s", who, plan.warning)

    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    nets = job_networks(
        model,
        settings,
        channels,
        resolution,
        seed,
        seed_labels,
        dev,
        num_classes=len(data.labels),
        kernel=kernel or "grouped",
        memory_format=memory_format,
    )
    betas = tuple(settings["betas"])
    lr_g, lr_d = learning_rates(settings)
    # capturable: Adam's step count on the device, as a CUDA graph needs (the same update up to rounding).
    opt_g = torch.optim.Adam(nets.gen.parameters(), lr=lr_g, betas=betas, capturable=graph)
    opt_d = torch.optim.Adam(nets.critic.parameters(), lr=lr_d, betas=betas, capturable=graph)
    decay = ema_decay(settings)
    ema = GeneratorEMA(nets.gen, decay) if decay else None  # elementwise: each member's own average
    rngs = [label_generators(seed, slot, dev) for slot in seed_labels]
    state = JobState(nets, opt_g, opt_d, ema, rngs, members)

    start = 0
    states = resume_states(members, budget.iterations)
    points = dict(budget.snapshot_points())
    for m in members:
        m.taken = {i for i, _ in list_snapshots(m.checkpoints)}
    if states is not None:
        at = int(states[0]["iteration"])
        missed = sorted({p for p in points for m in members if p < at and p not in m.taken})
        if missed:
            # A snapshot point lies in the part already trained (snapshots newly configured, or moved by
            # another budget): only a run from the start can take it; on a CPU it ends with the same
            # weights.  The members advance together, so all of them start afresh.
            log.info(
                "%s snapshots at iterations %s were never taken; training afresh instead of resuming from %d",
                who,
                missed,
                at,
            )
            for m in members:
                delete_checkpoints(m.checkpoints)
                m.taken = set()
            states = None
    if states is not None:
        state.restore(states, capturable=graph)
        start = int(states[0]["iteration"])
        del states
        log.info("%s resuming from checkpoint at iteration %d", who, start)

    step = TrainingIteration(
        nets,
        opt_g,
        opt_d,
        losses.loss_for(models.get(model).loss, settings),
        data.pool,
        data.counts,
        rngs,
        batch_size=bs,
        latent_dim=latent_dim,
        critic_steps=critic_steps,
        classes=data.classes,
        precision=precision,
        cuda_graph=graph,
        augment=policy_of(settings),
    )
    del data

    def sampled_states() -> list[dict]:
        """Each member's generator as files and snapshots hold it: the weight average when EMA is on."""
        return nets.member_states((ema or nets.gen).state_dict())

    def generator_info(member: Member) -> dict:
        return dict(
            model=model,
            label=member.label,
            channels=channels,
            resolution=resolution,
            image_size=(height, width),
            settings=settings,
            ema=decay,
        )

    def take_snapshots(iteration: int) -> None:
        """Each member's generator at a budget.snapshots point; never rewritten by a resumed run."""
        todo = [j for j, m in enumerate(members) if iteration in points and iteration not in m.taken]
        if not todo:
            return
        sds = sampled_states()
        for j in todo:
            m = members[j]
            nets.singles[j].load_state_dict(sds[j])
            payload = generator_payload(nets.singles[j], iterations=iteration, **generator_info(m))
            payload.update(
                iteration=int(iteration),
                elapsed=float(m.elapsed),
                fraction=points[iteration],
                fingerprint=m.fingerprint,
            )
            save_snapshot(m.checkpoints, iteration, payload)
            m.taken.add(iteration)

    def member_prefix(j: int) -> str:  # which member an error is about, where `who` does not say it
        return f"{members[j].name}: " if n_members > 1 else ""

    cadence = Cadence(budget, start, progress_seconds, labels=n_members)  # label-iterations per iteration
    kept = (
        f"the last good checkpoint in {members[0].checkpoints} is kept"
        if n_members == 1
        else "the last good checkpoints are kept"
    )
    iteration, stopped_by = start, plan.set_by
    take_snapshots(start)  # a checkpoint that sits exactly on a snapshot point not yet taken
    nets.gen.train()
    nets.critic.train()
    with StopRequest() as stop:
        while iteration < budget.iterations:
            t0 = time.monotonic()
            state.pending.append(step())
            iteration += 1
            if ema is not None:
                ema.update(nets.gen, iteration)
            step_seconds = time.monotonic() - t0
            for m in members:
                m.elapsed += step_seconds
            elapsed = max(m.elapsed for m in members)

            stopping = stop.signal  # read once: a signal landing later in this iteration waits for the next
            at_end, log_due, check_due, checkpoint_due = cadence.due(iteration, elapsed, stopping)
            if log_due:
                means = torch.stack(state.pending).double().mean(0).cpu()  # (4, K)
                state.pending.clear()
                bad = [j for j in range(n_members) if not bool(torch.isfinite(means[:2, j]).all())]
                if bad:
                    detail = "; ".join(
                        f"{member_prefix(j)}d_loss={means[0, j].item()}, g_loss={means[1, j].item()}" for j in bad
                    )
                    raise divergence_error(
                        who,
                        f"non-finite loss by iteration {iteration} ({detail})",
                        kept,
                        model,
                    )
                for j, m in enumerate(members):
                    m.rows.append((iteration, m.elapsed, *means[:, j].tolist()))
            if check_due:
                # Weights can turn NaN/Inf in the last step while the losses computed before it were
                # finite: never let such weights reach a snapshot, a checkpoint or a generator file.
                bad = _nonfinite_by_member(
                    n_members, {"generator": nets.gen.state_dict(), "critic": nets.critic.state_dict()}
                )
                if any(bad):
                    detail = "; ".join(f"{member_prefix(j)}{first_names(b)}" for j, b in enumerate(bad) if b)
                    raise divergence_error(
                        who,
                        f"non-finite weights at iteration {iteration} ({detail})",
                        f"not checkpointed, {kept}",
                        model,
                    )
            take_snapshots(iteration)  # before the checkpoint: a resume from it finds the snapshot taken
            if checkpoint_due:
                state.write_checkpoints(iteration)
            line = cadence.progress(iteration, elapsed, at_end)
            if line is not None:
                log.info("%s %s %s", who, line, loss_text(members, model))
            saved = f"checkpoint saved in {members[0].checkpoints}" if n_members == 1 else "checkpoints saved"
            if cadence.should_stop(iteration, elapsed, stopping, who, saved):
                stopped_by = "minutes"
                break

    results = []
    for m, single, sd in zip(members, nets.singles, sampled_states()):
        single.load_state_dict(sd)
        write_generator(
            m.outputs.generator,
            single,
            iterations=iteration,
            **generator_info(m),
            training=training_record(plan, flops, iteration, m.elapsed, stopped_by, bs, critic_steps),
        )
        write_log(m.outputs.log, m.rows)
        if m.outputs.snapshots is not None:
            write_snapshot_bundle(
                m.outputs.snapshots,
                m.checkpoints,
                budget,
                m.fingerprint,
                iteration,
                model=model,
                who=f"{model} {m.name}",
            )
        results.append(TrainResult(iteration, m.elapsed, start, stopped_by, m.rows))
    log.info(
        "%s done: %d iterations in %.1f s (%s)%s",
        who,
        iteration,
        max(m.elapsed for m in members),
        plan.stop_text(stopped_by),
        cadence.rate_text(),
    )
    return results


def loss_text(members: list[Member], model: str) -> str:
    """The losses of the last log row (the mean over the members when there are several)."""
    rows = [m.rows[-1] for m in members if m.rows]
    if not rows:
        return "d_loss=nan g_loss=nan"
    mean = [math.fsum(r[i] for r in rows) / len(rows) for i in range(2, 6)]
    text = f"d_loss={mean[0]:.4g} g_loss={mean[1]:.4g}"
    if models.get(model).loss == "wgan-gp":
        text += f" W={mean[3]:.4g}"
    return text + (f" (means over {len(rows)} labels)" if len(rows) > 1 else "")


def learning_rates(settings: dict) -> tuple[float, float]:
    """(generator, critic) Adam learning rates: lr_g and lr_d where set (a two-timescale update), else lr."""
    lr = settings.get("lr")
    lr_g = lr if settings.get("lr_g") is None else settings["lr_g"]
    lr_d = lr if settings.get("lr_d") is None else settings["lr_d"]
    if lr_g is None or lr_d is None:
        raise LabelwiseError("models.<name>: set lr (both networks) or both lr_g and lr_d")
    return float(lr_g), float(lr_d)


def train_label(
    shard, model: str, settings: dict, budget: Budget, seed: int, outputs: Outputs, *, label=None, **runtime
):
    """One label's job (`label`: checked against the shard), or the conditional model over the list
    `shard`: `train_job` with one member."""
    conditional = models.get(model).conditional
    shards = list(shard) if conditional else [shard]
    labels = None if conditional or label is None else [label]
    return train_job(shards, model, settings, budget, seed, [outputs], labels=labels, **runtime)[0]
