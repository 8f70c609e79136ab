"""The per-label training loop: one GAN trained on one label's images, resumable bit for bit.

`train_label` trains a generator/critic pair on a single label's shard for a fixed budget
(generator iterations and/or wall-clock minutes, whichever ends first), checkpointing every N
iterations.  Everything that shapes the trajectory is restored on resume — weights, optimizer
moments, the iteration counter, elapsed time, the log rows so far and both random streams (one
on the CPU for batch indices, one on the device for noise) — so a run that was killed and resumed
ends with the same weights as one that never stopped (exactly so on CPU).
"""

from __future__ import annotations

import copy
import functools
import hashlib
import logging
import math
import os
import socket
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .. import losses, models
from ..data.shards import read_shard_file
from ..device import select_device, set_threads
from ..errors import LabelwiseError
from ..nets import ConditionalGenerator, Critic, Generator, ProjectionCritic, dcgan_init_, network_resolution
from ..trainlog import LOG_COLUMNS, write_log
from . import compute
from .augment import augmented_critic, policy_of
from .checkpoint import (
    delete_checkpoints,
    list_snapshots,
    load_resumable,
    nonfinite_tensors,
    save_checkpoint,
    save_snapshot,
)
from .common import Cadence, StopRequest, divergence_error, first_names, training_fingerprint
from .ema import GeneratorEMA, ema_decay
from .engine import PRECISIONS, autocast_forward, to_device
from .generator_files import generator_payload, write_generator, write_snapshot_bundle
from .writers import one_writer

log = logging.getLogger("labelwise.train")

# The conditional model's seed slot: derived like a label's, from a value no label index takes.
CONDITIONAL_SEED_LABEL = 2**31 - 1


@dataclass
class Budget:
    iterations: int
    minutes: float | None = None
    checkpoint_every: int = 100
    snapshots: tuple[float, ...] = ()  # fractions of `iterations` at which to save the generator
    gflop: float | None = None  # counted GFLOP per label: fixes `iterations` at job start (train.compute)

    def __post_init__(self):
        self.snapshots = tuple(float(f) for f in (self.snapshots or ()))
        bad = [f for f in self.snapshots if not 0.0 < f <= 1.0]
        if bad:
            raise LabelwiseError(f"budget.snapshots: {bad} are not fractions in (0, 1] of budget.iterations")

    @property
    def log_every(self) -> int:
        # About a hundred rows per run, never more often than every iteration or rarer than 50.
        return max(1, min(50, self.iterations // 100))

    def snapshot_points(self) -> list[tuple[int, float]]:
        """(iteration, fraction) of each snapshot, by iteration: round(fraction × iterations), half up,
        at least 1; fractions that round to the same iteration give one snapshot (the smaller fraction)."""
        points: dict[int, float] = {}
        for f in sorted(self.snapshots):
            points.setdefault(max(1, math.floor(f * self.iterations + 0.5)), f)
        return sorted(points.items())


@dataclass
class Outputs:
    generator: Path
    log: Path
    checkpoints: Path
    snapshots: Path | None = None  # the bundle of this job's generator snapshots (budget.snapshots)


@dataclass
class TrainResult:
    iterations: int
    seconds: float
    resumed_from: int
    stopped_by: str  # "gflop" or "iterations" (the planned iterations, set by that limit), or "minutes"
    log_rows: list = field(default_factory=list)


def label_seed(seed: int, label: int) -> int:
    """Independent, reproducible seed for each label derived from the one global seed."""
    return int(np.random.SeedSequence([int(seed), int(label)]).generate_state(1)[0])


def images_to_tensor(images: np.ndarray, resolution: int) -> torch.Tensor:
    """uint8 N×C×H×W -> float in [-1, 1], padded with background (-1) to the network resolution."""
    x = torch.from_numpy(images).float().div_(127.5).sub_(1.0)
    pad_h, pad_w = resolution - x.shape[2], resolution - x.shape[3]
    if pad_h or pad_w:
        x = nn.functional.pad(x, (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2), value=-1.0)
    return x


def read_conditional_shards(shards) -> tuple[np.ndarray, np.ndarray, list[int], str]:
    """All selected labels' images, each image's class index (position in `labels`), the labels, and
    one checksum over the shards' checksums (for the checkpoint fingerprint)."""
    parts, classes, labels, sums = [], [], [], []
    for index, shard in enumerate(shards):
        images, attrs, label = read_label_shard(shard, None)
        if parts and images.shape[1:] != parts[0].shape[1:]:
            raise LabelwiseError(
                f"{shard}: images of shape {images.shape[1:]} next to {parts[0].shape[1:]}; re-create the shards"
            )
        parts.append(images)
        classes.append(np.full(len(images), index, dtype=np.int64))
        labels.append(label)
        sums.append(str(attrs.get("sha256")))
    return np.concatenate(parts), np.concatenate(classes), labels, hashlib.sha256("".join(sums).encode()).hexdigest()


def read_label_shard(shard: str | Path, label: int | None) -> tuple[np.ndarray, dict, int]:
    """A shard's images, attributes and label, checked to hold `label` (if given) and not to be empty,
    and against its dataset's meta.json when it sits in a prepared dataset (`read_shard_file`)."""
    images, attrs = read_shard_file(shard)
    if label is None:
        label = int(attrs["label"])
    elif int(attrs["label"]) != int(label):
        raise LabelwiseError(
            f"{shard}: holds label {attrs['label']} but label {label} was asked for; re-create the shards"
        )
    if len(images) == 0:
        raise LabelwiseError(f"{shard}: label {label} has no images; choose other data.labels or fix the dataset")
    return images, attrs, int(label)


def build_networks(
    model: str,
    settings: dict,
    channels: int,
    resolution: int,
    seed: int,
    label: int,
    device,
    num_classes: int | None = None,
) -> tuple[Generator, Critic]:
    """The label's freshly initialised generator and critic (shared with packed training);
    for the conditional model, its networks over `num_classes` classes."""
    algo = models.get(model)  # its loss and the parts of the architecture it fixes
    # Networks are built from the label's seed, so a fresh start is reproducible too.
    torch.manual_seed(label_seed(seed, label))
    width, latent_dim = int(settings["width"]), int(settings["latent_dim"])
    if algo.conditional:
        gen = ConditionalGenerator(latent_dim, channels, resolution, width, num_classes).to(device)
        return gen, ProjectionCritic(channels, resolution, width, num_classes).to(device)
    gen = Generator(latent_dim, channels, resolution, width).to(device)
    critic = Critic(channels, resolution, width, norm=algo.critic_norm).to(device)
    if algo.init == "dcgan":
        dcgan_init_(gen)
        dcgan_init_(critic)
    return gen, critic


def label_generators(seed: int, label: int, device) -> tuple[torch.Generator, torch.Generator]:
    """The label's two random streams: batch indices on the CPU, noise (and GP mixing) on the device."""
    rng_cpu = torch.Generator().manual_seed(label_seed(seed, label) + 1)
    rng_dev = torch.Generator(device=device).manual_seed(label_seed(seed, label) + 2)
    return rng_cpu, rng_dev


def checkpoint_state(
    fingerprint: str,
    iteration: int,
    elapsed: float,
    generator: dict,
    critic: dict,
    opt_g: dict,
    opt_d: dict,
    rng_cpu: torch.Generator,
    rng_dev: torch.Generator,
    rows,
    generator_ema: dict | None = None,
) -> dict:
    """One label's resumable state, as `save_checkpoint` writes it (the same for packed training);
    `generator_ema`: the generator's weight average (models.<name>.ema), when on."""
    return {
        **({"generator_ema": generator_ema} if generator_ema is not None else {}),
        "format": 1,
        "fingerprint": fingerprint,
        "iteration": iteration,
        "elapsed": elapsed,
        "generator": generator,
        "critic": critic,
        "opt_g": opt_g,
        "opt_d": opt_d,
        "rng_cpu": rng_cpu.get_state(),
        "rng_device": rng_dev.get_state(),
        "log": torch.tensor(rows, dtype=torch.float64).reshape(len(rows), len(LOG_COLUMNS)),
    }


def learning_rates(settings: dict) -> tuple[float, float]:
    """(generator, critic) Adam learning rates: lr_g and lr_d where set (a two-timescale update), else lr."""
    lr = settings.get("lr")
    lr_g = lr if settings.get("lr_g") is None else settings["lr_g"]
    lr_d = lr if settings.get("lr_d") is None else settings["lr_d"]
    if lr_g is None or lr_d is None:
        raise LabelwiseError("models.<name>: set lr (both networks) or both lr_g and lr_d")
    return float(lr_g), float(lr_d)


def sampled(gen: nn.Module, ema: GeneratorEMA | None) -> nn.Module:
    """The generator that files, snapshots and sampling get: the weight average when EMA is on."""
    return gen if ema is None else ema.averaged(copy.deepcopy(gen))


@one_writer  # distinct outputs per label, and this job the only writer of its checkpoint folder
def train_label(
    shard: str | Path | list,
    model: str,
    settings: dict,
    budget: Budget,
    seed: int,
    outputs: Outputs,
    *,
    label: int | None = None,
    device: str = "auto",
    threads: int | None = None,
    progress_seconds: float = 5.0,
    channels_last: bool = False,
    precision: str = "fp32",
) -> TrainResult:
    """Train `model` with `settings` on one label's shard; write generator + log CSV.

    a per-label model takes one shard; a conditional one (labelwise.models) takes the list of all
    selected labels' shards and
    trains one class-conditional generator over them.  `channels_last` runs the convolutions in
    NHWC layout (faster on CPUs, docs/benchmarks.md; results differ only by rounding).  `precision`
    'bf16' runs the forward passes under bf16 autocast (`labelwise.train.engine.autocast_forward`).
    """
    if precision not in PRECISIONS:
        raise LabelwiseError(f"runtime.precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    algo = models.get(model)
    conditional = algo.conditional
    set_threads(threads)
    dev = select_device(device)
    if conditional:
        images, classes, labels, data_sum = read_conditional_shards(shard if isinstance(shard, list) else [shard])
        label, who = CONDITIONAL_SEED_LABEL, f"{model} labels {','.join(map(str, labels))}"
        ydata = torch.from_numpy(classes).to(dev)
    else:
        images, attrs, label = read_label_shard(shard, label)
        labels, who, data_sum, ydata = [label], f"{model} label {label}", str(attrs.get("sha256")), None
    channels, height, width = images.shape[1:]
    resolution = network_resolution(max(height, width))
    data = images_to_tensor(images, resolution).to(dev)
    n_images = data.shape[0]

    bs = int(settings["batch_size"])
    latent_dim = int(settings["latent_dim"])
    critic_steps = int(settings["critic_steps"])
    fingerprint = training_fingerprint(model, settings, seed, label, data_sum)
    flops = compute.label_iteration_flops(model, settings, channels, resolution, len(labels))
    plan = compute.plan_iterations(budget, flops, len(labels))  # budget.gflop -> iterations, before any resume
    budget = plan.budget
    # Where this job runs and which budget sets its iterations, in one line: the evidence that
    # concurrent jobs got distinct GPUs, and of a compute budget that buys next to nothing.
    log.info(
        "[%s] device %s, %d thread(s), CUDA_VISIBLE_DEVICES=%s, host %s, start %s; budget: %s",
        who,
        dev,
        torch.get_num_threads(),
        os.environ.get("CUDA_VISIBLE_DEVICES", "<unset>"),
        socket.gethostname(),
        datetime.now().astimezone().isoformat(timespec="milliseconds"),
        plan.text,
    )
    if plan.warning:
        log.warning("[%s] %s", who, plan.warning)

    gen, critic = build_networks(model, settings, channels, resolution, seed, label, dev, num_classes=len(labels))
    if channels_last:  # parameters keep their values; checkpoints stay layout-free (state_dict)
        gen.to(memory_format=torch.channels_last)
        critic.to(memory_format=torch.channels_last)
        data = data.contiguous(memory_format=torch.channels_last)
    # One calling convention for both kinds: y (class indices) is None for the per-label models.
    G = autocast_forward(gen if conditional else (lambda z, y: gen(z)), dev, precision)
    betas = tuple(settings["betas"])
    lr_g, lr_d = learning_rates(settings)
    opt_g = torch.optim.Adam(gen.parameters(), lr=lr_g, betas=betas)
    opt_d = torch.optim.Adam(critic.parameters(), lr=lr_d, betas=betas)
    rng_cpu, rng_dev = label_generators(seed, label, dev)
    # DiffAugment (models.<name>.augment): every critic input transformed, draws from the label's device stream.
    D = augmented_critic(
        autocast_forward(critic if conditional else (lambda x, y: critic(x)), dev, precision),
        policy_of(settings),
        [rng_dev],
    )
    decay = ema_decay(settings)
    ema = GeneratorEMA(gen, decay) if decay else None

    start, elapsed, rows = 0, 0.0, []
    state = load_resumable(outputs.checkpoints, fingerprint, budget.iterations)
    points = dict(budget.snapshot_points())
    taken = {i for i, _ in list_snapshots(outputs.checkpoints)}
    if state is not None and any(p < int(state["iteration"]) and p not in taken for p in points):
        # A snapshot point lies in the part already trained (snapshots newly configured, or moved by
        # another budget): only a run from the start can take it; on a CPU it ends with the same weights.
        missed = sorted(p for p in points if p < int(state["iteration"]) and p not in taken)
        log.info(
            "[%s] snapshots at iterations %s were never taken; training afresh instead of resuming from %d",
            who,
            missed,
            int(state["iteration"]),
        )
        delete_checkpoints(outputs.checkpoints)
        state, taken = None, set()
    if state is not None:
        gen.load_state_dict(state["generator"])
        critic.load_state_dict(state["critic"])
        opt_g.load_state_dict(state["opt_g"])
        opt_d.load_state_dict(state["opt_d"])
        rng_cpu.set_state(state["rng_cpu"])
        rng_dev.set_state(state["rng_device"].to("cpu"))
        if ema is not None:
            ema.load_state_dict(state["generator_ema"])
        start, elapsed = int(state["iteration"]), float(state["elapsed"])
        rows = [tuple(r) for r in state["log"].tolist()]
        log.info("[%s] resuming from checkpoint at iteration %d", who, start)

    def snapshot(iteration: int) -> dict:
        return checkpoint_state(
            fingerprint,
            iteration,
            elapsed,
            gen.state_dict(),
            critic.state_dict(),
            opt_g.state_dict(),
            opt_d.state_dict(),
            rng_cpu,
            rng_dev,
            rows,
            ema.state_dict() if ema is not None else None,
        )

    generator_info = dict(
        model=model,
        label=labels if conditional else label,
        channels=channels,
        resolution=resolution,
        image_size=(height, width),
        settings=settings,
        ema=decay,
    )

    def take_snapshot(iteration: int) -> None:
        """The generator at a budget.snapshots point; never rewritten by a resumed run."""
        if iteration in points and iteration not in taken:
            payload = generator_payload(sampled(gen, ema), iterations=iteration, **generator_info)
            payload.update(
                iteration=int(iteration), elapsed=float(elapsed), fraction=points[iteration], fingerprint=fingerprint
            )
            save_snapshot(outputs.checkpoints, iteration, payload)
            taken.add(iteration)

    take_snapshot(start)  # a checkpoint that sits exactly on a snapshot point not yet taken

    wgan = algo.loss == "wgan-gp"
    gp_lambda = float(settings.get("gp_lambda", 10.0))
    cadence = Cadence(budget, start, progress_seconds)
    pending: list[torch.Tensor] = []  # per-iteration diagnostics, reduced at each log point
    nan = torch.tensor(float("nan"), device=dev)
    iteration, stopped_by = start, plan.set_by
    gen.train()
    critic.train()
    with StopRequest() as stop:
        while iteration < budget.iterations:
            t0 = time.monotonic()
            critic.requires_grad_(True)
            for _ in range(critic_steps):
                idx = to_device(torch.randint(n_images, (bs,), generator=rng_cpu), dev)
                real = data.index_select(0, idx)
                y = ydata.index_select(0, idx) if conditional else None  # fakes of the real batch's classes
                z = torch.randn(bs, latent_dim, device=dev, generator=rng_dev)
                with torch.no_grad():
                    fake = G(z, y)
                critic_y = functools.partial(D, y=y)
                if wgan:
                    # The mixing weights before the critic calls (whose augmentation draws from the same
                    # stream): the order packed training draws in.
                    alpha = torch.rand(bs, 1, 1, 1, device=dev, generator=rng_dev, dtype=real.dtype)
                    d_loss, diag = losses.wgan_gp_critic_loss(critic_y, real, fake, gp_lambda, rng_dev, alpha=alpha)
                else:
                    d_loss, diag = losses.bce_discriminator_loss(critic_y, real, fake)
                opt_d.zero_grad(set_to_none=True)
                d_loss.backward()
                opt_d.step()
            critic.requires_grad_(False)  # the generator step needs no critic gradients
            # Classes for the generator step follow the data's class frequencies.
            y = (
                ydata.index_select(0, to_device(torch.randint(n_images, (bs,), generator=rng_cpu), dev))
                if conditional
                else None
            )
            z = torch.randn(bs, latent_dim, device=dev, generator=rng_dev)
            fake = G(z, y)
            critic_y = functools.partial(D, y=y)
            g_loss = losses.wgan_generator_loss(critic_y, fake) if wgan else losses.bce_generator_loss(critic_y, fake)
            opt_g.zero_grad(set_to_none=True)
            g_loss.backward()
            opt_g.step()
            iteration += 1
            if ema is not None:
                ema.update(gen, iteration)
            pending.append(
                torch.stack(
                    [
                        d_loss.detach(),
                        g_loss.detach(),
                        diag.get("gradient_penalty", nan),
                        diag.get("wasserstein_estimate", nan),
                    ]
                )
            )
            elapsed += time.monotonic() - t0

            stopping = stop.signal  # read once: a signal landing later in this iteration waits for the next
            at_end, log_due, check_due, checkpoint_due = cadence.due(iteration, elapsed, stopping)
            if log_due:
                means = torch.stack(pending).double().mean(0).cpu()
                pending.clear()
                if not bool(torch.isfinite(means[:2]).all()):
                    raise divergence_error(
                        f"[{who}]",
                        f"non-finite loss by iteration {iteration} (d_loss={means[0].item()}, "
                        f"g_loss={means[1].item()})",
                        f"the last good checkpoint in {outputs.checkpoints} is kept",
                        model,
                    )
                rows.append((iteration, elapsed, *means.tolist()))
            if check_due:
                # Weights can turn NaN/Inf in the last step while the losses computed before it were
                # finite: never let such weights reach a snapshot, a checkpoint or the generator file.
                bad = nonfinite_tensors({"generator": gen.state_dict(), "critic": critic.state_dict()})
                if bad:
                    raise divergence_error(
                        f"[{who}]",
                        f"non-finite weights at iteration {iteration} ({first_names(bad)})",
                        f"not checkpointed, the last good checkpoint in {outputs.checkpoints} is kept",
                        model,
                    )
            take_snapshot(iteration)  # before the checkpoint: a resume from it finds the snapshot taken
            if checkpoint_due:
                save_checkpoint(outputs.checkpoints, iteration, snapshot(iteration))
            line = cadence.progress(iteration, elapsed, at_end)
            if line is not None:
                r = rows[-1] if rows else (0, 0, math.nan, math.nan, math.nan, math.nan)
                log.info("[%s] %s d_loss=%.4g g_loss=%.4g%s", who, line, r[2], r[3], f" W={r[5]:.4g}" if wgan else "")
            if cadence.should_stop(
                iteration, elapsed, stopping, f"[{who}]", f"checkpoint saved in {outputs.checkpoints}"
            ):
                stopped_by = "minutes"
                break

    write_generator(
        outputs.generator,
        sampled(gen, ema),
        iterations=iteration,
        **generator_info,
        training=compute.training_record(plan, flops, iteration, elapsed, stopped_by, bs, critic_steps),
    )
    write_log(outputs.log, rows)
    if outputs.snapshots is not None:
        write_snapshot_bundle(
            outputs.snapshots, outputs.checkpoints, budget, fingerprint, iteration, model=model, who=who
        )
    log.info(
        "[%s] done: %d iterations in %.1f s (%s)%s",
        who,
        iteration,
        elapsed,
        plan.stop_text(stopped_by),
        cadence.rate_text(),
    )
    return TrainResult(iterations=iteration, seconds=elapsed, resumed_from=start, stopped_by=stopped_by, log_rows=rows)
