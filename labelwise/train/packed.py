"""Packed training: K labels' GANs trained in one process as one batched computation.

`train_packed` trains K labels of a per-label model (runtime.labels_per_job) as one network of
K-label convolutions (`labelwise.train.packed_layers`) with per-label batch norm, losses and Adam,
one iteration at a time (`labelwise.train.engine.PackedIteration`).  Nothing passes between labels:
each label keeps its seed, random streams, log, checkpoints and snapshots in `train_label`'s format,
so it ends with the weights of its own `train_label` run up to rounding, and either resumes the
other's checkpoints.  How and why: docs/packed-training.md.
"""

from __future__ import annotations

import copy
import logging
import time
from pathlib import Path

import torch
from torch import nn

from .. import models
from ..device import select_device, set_threads
from ..errors import LabelwiseError
from ..nets import Generator, network_resolution
from ..trainlog import LOG_COLUMNS, write_log
from . import compute
from .augment import policy_of
from .checkpoint import delete_checkpoints, list_snapshots, load_resumable, save_checkpoint, save_snapshot
from .common import Cadence, StopRequest, divergence_error, first_names, training_fingerprint
from .ema import GeneratorEMA, ema_decay
from .engine import PRECISIONS, PackedIteration
from .generator_files import generator_payload, write_generator, write_snapshot_bundle
from .loop import (
    Budget,
    Outputs,
    TrainResult,
    build_networks,
    checkpoint_state,
    images_to_tensor,
    label_generators,
    learning_rates,
    read_label_shard,
)
from .packed_layers import kernel_for, packed_conv
from .writers import one_writer

log = logging.getLogger("labelwise.train")


# --------------------------------------------------------------------------- packed networks


def _packed_layers(net: nn.Sequential, k: int, kernel: str) -> nn.Sequential:
    """The layers of `net` widened to K independent copies: K-label convolutions (`packed_conv`,
    grouped or batched-GEMM), K*C-channel batch norm."""
    layers: list[nn.Module] = []
    for m in net:
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            layers.append(packed_conv(m, k, kernel))
        elif isinstance(m, nn.BatchNorm2d):
            layers.append(
                nn.BatchNorm2d(
                    k * m.num_features,
                    eps=m.eps,
                    momentum=m.momentum,
                    affine=m.affine,
                    track_running_stats=m.track_running_stats,
                )
            )
        elif isinstance(m, (nn.ReLU, nn.LeakyReLU, nn.Tanh)):
            layers.append(copy.deepcopy(m))  # parameterless and elementwise: per label already
        else:
            raise TypeError(f"cannot pack layer {m!r}")
    return nn.Sequential(*layers)


class _Packed(nn.Module):
    """K networks of one architecture as one module; its state_dict has the single network's keys."""

    def __init__(self, single: nn.Module, k: int, memory_format: torch.memory_format, kernel: str = "grouped"):
        super().__init__()
        self.k = k
        self.memory_format = memory_format
        self.kernel = kernel
        self.net = _packed_layers(single.net, k, kernel)

    @classmethod
    def from_networks(cls, nets: list[nn.Module], memory_format=torch.contiguous_format, kernel: str = "grouped"):
        """`kernel`: 'grouped' or 'bmm' (`labelwise.train.packed_layers`); the same parameters either way."""
        packed = cls(nets[0], len(nets), memory_format, kernel)
        packed.load_state_dict(pack_state_dicts([n.state_dict() for n in nets]))
        return packed.to(next(nets[0].parameters()).device, memory_format=memory_format)

    def unpack(self) -> list[dict]:
        """The K single-network state_dicts (label order), ready for `Generator/Critic.load_state_dict`."""
        return unpack_state_dict(self.state_dict(), self.k)


class PackedGenerator(_Packed):
    """K generators: noise (B, K, latent_dim) -> images (B, K, C, H, W); [:, k] is label k's output."""

    def __init__(self, single: Generator, k: int, memory_format=torch.contiguous_format, kernel: str = "grouped"):
        super().__init__(single, k, memory_format, kernel)
        self.latent_dim = single.latent_dim

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.net(z.reshape(z.shape[0], self.k * self.latent_dim, 1, 1))
        return x.view(x.shape[0], self.k, x.shape[1] // self.k, *x.shape[2:])


class PackedCritic(_Packed):
    """K critics: images (B, K, C, H, W) -> scores (B, K); [:, k] is label k's critic on [:, k]."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        x = x.reshape(b, -1, *x.shape[3:]).contiguous(memory_format=self.memory_format)
        return self.net(x).view(b, self.k)


# --------------------------------------------------------------------------- conversion
# Every packed tensor is its K per-label tensors concatenated along dimension 0: grouped
# convolution weights are (K*out, in, kh, kw) (transposed: (K*in, out, kh, kw)) with group k in
# rows k*n:(k+1)*n, and biases, BN parameters/statistics and Adam moments follow their parameter.
# Scalars (BN's num_batches_tracked, Adam's step) are the same for every label, as all labels
# advance together.


def _pack_value(values: list, what: str):
    first = values[0]
    if isinstance(first, torch.Tensor) and first.dim() > 0:
        return torch.cat([v.contiguous() for v in values], dim=0)
    if any(not _equal(first, v) for v in values[1:]):
        raise LabelwiseError(
            f"cannot pack {what}: it differs between labels ({values}); the labels are not at the same step"
        )
    return first.clone() if isinstance(first, torch.Tensor) else copy.deepcopy(first)


def _equal(a, b) -> bool:
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return bool(torch.equal(torch.as_tensor(a), torch.as_tensor(b)))
    return a == b


def _unpack_value(value, k: int) -> list:
    if isinstance(value, torch.Tensor) and value.dim() > 0:
        if value.shape[0] % k:
            raise ValueError(f"a packed tensor of shape {tuple(value.shape)} does not split into {k} labels")
        # Own, plain-layout copies: a single network's tensors, not views into the packed ones.
        return [c.clone(memory_format=torch.contiguous_format) for c in value.chunk(k, dim=0)]
    return [value.clone() if isinstance(value, torch.Tensor) else copy.deepcopy(value) for _ in range(k)]


def pack_state_dicts(state_dicts: list[dict]) -> dict:
    """K single networks' state_dicts (label order) -> the packed module's state_dict."""
    keys = list(state_dicts[0])
    if any(list(sd) != keys for sd in state_dicts[1:]):
        raise LabelwiseError("cannot pack networks of different architectures")
    return {key: _pack_value([sd[key] for sd in state_dicts], key) for key in keys}


def unpack_state_dict(packed: dict, k: int) -> list[dict]:
    """The packed module's state_dict -> K single networks' state_dicts (label order)."""
    split = {key: _unpack_value(v, k) for key, v in packed.items()}
    return [{key: split[key][i] for key in packed} for i in range(k)]


def pack_optimizer_states(states: list[dict]) -> dict:
    """K single networks' Adam state_dicts -> the state_dict of Adam over the packed parameters.

    The packed module lists its parameters in the single network's order, so parameter ids match.
    """
    first = states[0]
    ids = list(first["state"])
    if any(list(s["state"]) != ids for s in states[1:]):
        raise LabelwiseError("cannot pack optimizer states of different shapes (not all labels have taken a step)")
    packed = {
        i: {
            name: _pack_value([s["state"][i][name] for s in states], f"optimizer state {name}")
            for name in first["state"][i]
        }
        for i in ids
    }
    return {"state": packed, "param_groups": copy.deepcopy(first["param_groups"])}


def unpack_optimizer_state(state: dict, k: int) -> list[dict]:
    """The packed Adam's state_dict -> K single networks' Adam state_dicts (label order)."""
    per_label: list[dict] = [{"state": {}, "param_groups": copy.deepcopy(state["param_groups"])} for _ in range(k)]
    for i, entry in state["state"].items():
        split = {name: _unpack_value(v, k) for name, v in entry.items()}
        for j in range(k):
            per_label[j]["state"][i] = {name: split[name][j] for name in entry}
    return per_label


# --------------------------------------------------------------------------- training


class _Label:
    """One label's own things in a packed run: its images, checksum, log rows and training time."""

    def __init__(self, shard, label, dev):
        images, attrs, self.label = read_label_shard(shard, label)
        self.sha256 = str(attrs.get("sha256"))
        self.shape = tuple(images.shape[1:])
        self.resolution = network_resolution(max(self.shape[1], self.shape[2]))
        self.data = images_to_tensor(images, self.resolution).to(dev)
        self.rows: list[tuple] = []
        self.elapsed = 0.0


def _nonfinite_by_label(k: int, state_dicts: dict[str, dict]) -> list[list[str]]:
    """For each label, '<network>.<tensor>' of its floating-point tensors holding a NaN or Inf
    (`nonfinite_tensors` per label, read off the packed tensors without unpacking them)."""
    names, flags = [], []
    for network, sd in state_dicts.items():
        for key, value in sd.items():
            if isinstance(value, torch.Tensor) and value.is_floating_point() and value.dim() > 0:
                names.append(f"{network}.{key}")
                flags.append(torch.isfinite(value.reshape(k, -1)).all(1))
    ok = torch.stack(flags).cpu().tolist() if flags else []  # one device synchronisation
    return [[name for name, row in zip(names, ok) if not row[j]] for j in range(k)]


def _resume_states(labels: list[_Label], outputs: list[Outputs], fingerprints: list[str], max_iteration: int):
    """Each label's checkpoint at one common iteration (the newest all of them have), or None.

    Packed runs save every label at the same iterations, so after a kill mid-save the labels saved
    last are one checkpoint behind and their previous one (checkpoints keep two) is common ground.
    Labels with nothing to resume make the whole group start afresh.
    """
    limit = max_iteration
    while True:
        states = [load_resumable(out.checkpoints, fp, limit) for out, fp in zip(outputs, fingerprints)]
        if all(s is None for s in states):
            return None
        if any(s is None for s in states):
            limit = 0  # clears the others' checkpoints, as a fresh start of one label would
            continue
        iterations = {int(s["iteration"]) for s in states}
        if len(iterations) == 1:
            return states
        limit = min(iterations)  # strictly smaller each round: terminates
        log.info(
            "labels %s have checkpoints at different iterations %s; resuming all from %d",
            [lab.label for lab in labels],
            sorted(iterations),
            limit,
        )


@one_writer  # distinct outputs per label, and this job the only writer of its checkpoint folders
def train_packed(
    shards: list[str | Path],
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
    packed_kernel: str = "auto",
    precision: str = "fp32",
    cuda_graph: str = "auto",
) -> list[TrainResult]:
    """Train `model` on K shards at once, one independent GAN per label; write each label's outputs.

    Per label this is `train_label(shards[k], model, settings, budget, seed, outputs[k], label=labels[k])`
    up to floating-point rounding: same initial weights, random streams, logs, checkpoints (in
    outputs[k].checkpoints, in train_label's format) and generator file.  `channels_last` runs the
    convolutions in NHWC layout (faster on CPUs; the results differ only by rounding).
    `packed_kernel` ('auto', 'grouped', 'bmm': `labelwise.train.packed_layers`) computes the K labels'
    convolutions; `precision` ('fp32', 'bf16') and `cuda_graph` ('auto': on CUDA, 'off') shape the
    iteration (`labelwise.train.engine`).  None of them changes the checkpoint format.
    """
    algo = models.get(model)
    if not shards or len(shards) != len(outputs) or (labels is not None and len(labels) != len(shards)):
        raise LabelwiseError(
            f"train_packed needs one Outputs (and label, if given) per shard; got {len(shards)} shards, "
            f"{len(outputs)} outputs, {'no' if labels is None else len(labels)} labels"
        )
    if algo.conditional:
        raise LabelwiseError(
            f"{model} is one conditional network over all labels; packed training is for the "
            f"per-label models ({', '.join(models.per_label())})"
        )
    set_threads(threads)
    dev = select_device(device)
    group = [_Label(shard, None if labels is None else labels[i], dev) for i, shard in enumerate(shards)]
    ids = [lab.label for lab in group]
    name = f"[{model} labels {','.join(map(str, ids))}]"
    if len(set(ids)) != len(ids):
        raise LabelwiseError(f"{name}: a label is listed twice; pack each label once")
    if len({lab.shape for lab in group}) != 1:
        raise LabelwiseError(
            f"{name}: the shards hold images of different shapes "
            f"({sorted({lab.shape for lab in group})}); pack labels of one dataset"
        )
    k = len(group)
    channels, height, width = group[0].shape
    resolution = group[0].resolution
    kernel = kernel_for(packed_kernel, dev)
    if precision not in PRECISIONS:
        raise LabelwiseError(f"runtime.precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if cuda_graph not in ("auto", "off"):
        raise LabelwiseError(f"runtime.cuda_graph must be 'auto' or 'off', got {cuda_graph!r}")
    graph = cuda_graph == "auto" and dev.type == "cuda"
    bs = int(settings["batch_size"])
    latent_dim = int(settings["latent_dim"])
    critic_steps = int(settings["critic_steps"])
    fingerprints = [training_fingerprint(model, settings, seed, lab.label, lab.sha256) for lab in group]
    flops = compute.label_iteration_flops(model, settings, channels, resolution)
    plan = compute.plan_iterations(budget, flops)  # budget.gflop -> iterations, as train_label fixes them
    budget = plan.budget
    log.info(
        "%s packed on device %s, %d thread(s), %s kernel, %s%s; budget: %s",
        name,
        dev,
        torch.get_num_threads(),
        kernel,
        precision,
        ", CUDA graph" if graph else "",
        plan.text,
    )
    if plan.warning:
        log.warning("%s %s", name, plan.warning)
    nets = [build_networks(model, settings, channels, resolution, seed, lab.label, dev) for lab in group]
    gens, critics = [g for g, _ in nets], [c for _, c in nets]
    rngs = [label_generators(seed, lab.label, dev) for lab in group]

    start = 0
    states = _resume_states(group, outputs, fingerprints, budget.iterations)
    points = dict(budget.snapshot_points())
    taken = [{i for i, _ in list_snapshots(out.checkpoints)} for out in outputs]
    if states is not None:
        at = int(states[0]["iteration"])
        missed = sorted({p for p in points for t in taken if p < at and p not in t})
        if missed:
            # As in train_label: a snapshot point in the part already trained can only be taken by a
            # run from the start; the labels advance together, so all of them start afresh.
            log.info(
                "%s snapshots at iterations %s were never taken; training afresh instead of resuming from %d",
                name,
                missed,
                at,
            )
            for out in outputs:
                delete_checkpoints(out.checkpoints)
            states, taken = None, [set() for _ in outputs]
    if states is not None:
        for lab, g, c, (rng_cpu, rng_dev), state in zip(group, gens, critics, rngs, states):
            g.load_state_dict(state["generator"])
            c.load_state_dict(state["critic"])
            rng_cpu.set_state(state["rng_cpu"])
            rng_dev.set_state(state["rng_device"].to("cpu"))
            lab.elapsed = float(state["elapsed"])
            lab.rows = [tuple(r) for r in state["log"].tolist()]
        start = int(states[0]["iteration"])
        log.info("%s resuming from checkpoint at iteration %d", name, start)

    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    gen = PackedGenerator.from_networks(gens, memory_format, kernel)
    critic = PackedCritic.from_networks(critics, memory_format, kernel)
    betas = tuple(settings["betas"])
    lr_g, lr_d = learning_rates(settings)
    # capturable: Adam's step count on the device, as a CUDA graph needs (the same update up to rounding).
    opt_g = torch.optim.Adam(gen.parameters(), lr=lr_g, betas=betas, capturable=graph)
    opt_d = torch.optim.Adam(critic.parameters(), lr=lr_d, betas=betas, capturable=graph)
    decay = ema_decay(settings)
    ema = GeneratorEMA(gen, decay) if decay else None  # elementwise: each label's own average
    if states is not None:
        opt_g.load_state_dict(pack_optimizer_states([s["opt_g"] for s in states]))
        opt_d.load_state_dict(pack_optimizer_states([s["opt_d"] for s in states]))
        if ema is not None:
            ema.load_state_dict(pack_state_dicts([s["generator_ema"] for s in states]))
        del states

    # All labels' images in one tensor; label k's batch indices are drawn from its own count and
    # shifted by its offset, so one index_select gathers every label's batch.
    pool = torch.cat([lab.data for lab in group])
    counts = [lab.data.shape[0] for lab in group]
    for lab in group:
        del lab.data
    wgan = algo.loss == "wgan-gp"
    step = PackedIteration(
        gen,
        critic,
        opt_g,
        opt_d,
        pool,
        counts,
        rngs,
        batch_size=bs,
        latent_dim=latent_dim,
        critic_steps=critic_steps,
        wgan=wgan,
        gp_lambda=float(settings.get("gp_lambda", 10.0)),
        precision=precision,
        cuda_graph=graph,
        augment=policy_of(settings),
    )

    def sampled_states() -> list[dict]:
        """Each label's generator as files and snapshots hold it: the weight average when EMA is on."""
        return unpack_state_dict(ema.state_dict(), k) if ema is not None else gen.unpack()

    def snapshot(iteration: int, j: int, g_sd, c_sd, og_sd, od_sd, ema_sd) -> dict:
        lab = group[j]
        return checkpoint_state(
            fingerprints[j],
            iteration,
            lab.elapsed,
            g_sd[j],
            c_sd[j],
            og_sd[j],
            od_sd[j],
            *rngs[j],
            lab.rows,
            None if ema_sd is None else ema_sd[j],
        )

    infos = [
        dict(
            model=model,
            label=lab.label,
            channels=channels,
            resolution=resolution,
            image_size=(height, width),
            settings=settings,
            ema=decay,
        )
        for lab in group
    ]

    def take_snapshots(iteration: int) -> None:
        """Each label's generator at a budget.snapshots point; never rewritten by a resumed run."""
        todo = [j for j in range(k) if iteration in points and iteration not in taken[j]]
        if not todo:
            return
        sds = sampled_states()
        for j in todo:
            gens[j].load_state_dict(sds[j])
            payload = generator_payload(gens[j], iterations=iteration, **infos[j])
            payload.update(
                iteration=int(iteration),
                elapsed=float(group[j].elapsed),
                fraction=points[iteration],
                fingerprint=fingerprints[j],
            )
            save_snapshot(outputs[j].checkpoints, iteration, payload)
            taken[j].add(iteration)

    def save_all(iteration: int) -> None:
        g_sd, c_sd = gen.unpack(), critic.unpack()
        og_sd, od_sd = unpack_optimizer_state(opt_g.state_dict(), k), unpack_optimizer_state(opt_d.state_dict(), k)
        ema_sd = unpack_state_dict(ema.state_dict(), k) if ema is not None else None
        for j, out in enumerate(outputs):
            save_checkpoint(out.checkpoints, iteration, snapshot(iteration, j, g_sd, c_sd, og_sd, od_sd, ema_sd))

    cadence = Cadence(budget, start, progress_seconds, labels=k)
    pending: list[torch.Tensor] = []  # per-iteration (4, K) diagnostics, reduced at each log point
    iteration, stopped_by = start, plan.set_by
    take_snapshots(start)  # a checkpoint that sits exactly on a snapshot point not yet taken
    gen.train()
    critic.train()
    with StopRequest() as stop:
        while iteration < budget.iterations:
            t0 = time.monotonic()
            pending.append(step())
            iteration += 1
            if ema is not None:
                ema.update(gen, iteration)
            step_seconds = time.monotonic() - t0
            for lab in group:
                lab.elapsed += step_seconds
            elapsed = max(lab.elapsed for lab in group)

            stopping = stop.signal  # read once: a signal landing later in this iteration waits for the next
            at_end, log_due, check_due, checkpoint_due = cadence.due(iteration, elapsed, stopping)
            if log_due:
                means = torch.stack(pending).double().mean(0).cpu()  # (4, K)
                pending.clear()
                bad = [j for j in range(k) if not bool(torch.isfinite(means[:2, j]).all())]
                if bad:
                    detail = "; ".join(
                        f"label {ids[j]}: d_loss={means[0, j].item()}, g_loss={means[1, j].item()}" for j in bad
                    )
                    raise divergence_error(
                        name,
                        f"non-finite loss by iteration {iteration} ({detail})",
                        "the last good checkpoints are kept",
                        model,
                    )
                for j, lab in enumerate(group):
                    lab.rows.append((iteration, lab.elapsed, *means[:, j].tolist()))
            if check_due:
                # As in train_label: weights that turned non-finite in the last step never reach a
                # snapshot, a checkpoint or a generator file.
                bad = _nonfinite_by_label(k, {"generator": gen.state_dict(), "critic": critic.state_dict()})
                if any(bad):
                    detail = "; ".join(f"label {ids[j]}: {first_names(b)}" for j, b in enumerate(bad) if b)
                    raise divergence_error(
                        name,
                        f"non-finite weights at iteration {iteration} ({detail})",
                        "not checkpointed, the last good checkpoints are kept",
                        model,
                    )
            take_snapshots(iteration)  # before the checkpoint: a resume from it finds the snapshot taken
            if checkpoint_due:
                save_all(iteration)
            line = cadence.progress(iteration, elapsed, at_end)
            if line is not None:
                log.info("%s %s", name, line)
            if cadence.should_stop(iteration, elapsed, stopping, name, "checkpoints saved"):
                stopped_by = "minutes"
                break

    results = []
    for j, (lab, g, sd, out) in enumerate(zip(group, gens, sampled_states(), outputs)):
        g.load_state_dict(sd)
        write_generator(
            out.generator,
            g,
            iterations=iteration,
            **infos[j],
            training=compute.training_record(plan, flops, iteration, lab.elapsed, stopped_by, bs, critic_steps),
        )
        write_log(out.log, lab.rows)
        if out.snapshots is not None:
            write_snapshot_bundle(
                out.snapshots,
                out.checkpoints,
                budget,
                fingerprints[j],
                iteration,
                model=model,
                who=f"{model} label {lab.label}",
            )
        results.append(
            TrainResult(
                iterations=iteration, seconds=lab.elapsed, resumed_from=start, stopped_by=stopped_by, log_rows=lab.rows
            )
        )
    log.info(
        "%s done: %d iterations in %.1f s (%s)%s",
        name,
        iteration,
        max(lab.elapsed for lab in group),
        plan.stop_text(stopped_by),
        cadence.rate_text(),
    )
    return results


__all__ = [
    "PackedCritic",
    "PackedGenerator",
    "pack_optimizer_states",
    "pack_state_dicts",
    "train_packed",
    "unpack_optimizer_state",
    "unpack_state_dict",
    "LOG_COLUMNS",
]
