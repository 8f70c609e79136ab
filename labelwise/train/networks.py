"""The networks of a training job: built per label from its seed, and packed into one module.

`build_networks` makes one label's generator and critic (or the conditional model's pair over all
labels), initialised from the label's seed.  A job trains its members through one pair of modules
(`job_networks`): K labels of a per-label model become one network of K-label convolutions
(`PackedGenerator`, `PackedCritic`: grouped or batched-GEMM convolutions, `labelwise.train.packed_layers`,
with per-label batch norm; K=1 is one label's job), the conditional model is its own pair.  Every
packed tensor is its members' tensors concatenated along dimension 0, so `pack_state_dicts` /
`unpack_state_dict` (and the optimizer-state versions) convert between the job's modules and each
member's own state_dicts, the form checkpoints and generator files hold.  How and why:
docs/packed-training.md.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from .. import models
from ..errors import LabelwiseError
from ..nets import ConditionalGenerator, Critic, Generator, ProjectionCritic, dcgan_init_
from ..seeds import label_seed
from .packed_layers import packed_conv


def build_networks(
    model: str,
    settings: dict,
    channels: int,
    resolution: int,
    seed: int,
    label: int,
    device,
    num_classes: int | None = None,
) -> tuple[nn.Module, nn.Module]:
    """The label's freshly initialised generator and critic; for the conditional model, its
    networks over `num_classes` classes (`label`: its seed slot, `labelwise.seeds.CONDITIONAL_SEED_LABEL`)."""
    algo = models.get(model)  # its loss and the parts of the architecture it fixes
    # Networks are built from the label's seed, so a fresh start is reproducible too.
    torch.manual_seed(label_seed(seed, label))
    width, latent_dim = int(settings["width"]), int(settings["latent_dim"])
    if algo.conditional:
        gen = ConditionalGenerator(latent_dim, channels, resolution, width, num_classes).to(device)
        critic = ProjectionCritic(channels, resolution, width, num_classes, norm=algo.critic_norm).to(device)
    else:
        gen = Generator(latent_dim, channels, resolution, width).to(device)
        critic = Critic(channels, resolution, width, norm=algo.critic_norm).to(device)
    if algo.init == "dcgan":
        dcgan_init_(gen)
        dcgan_init_(critic)
    return gen, critic


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
        device = next(nets[0].parameters()).device
        # On the meta device (FLOP counting) nothing can be copied: the packed tensors are taken as they are.
        packed.load_state_dict(pack_state_dicts([n.state_dict() for n in nets]), assign=device.type == "meta")
        packed.to(device)
        if memory_format != torch.contiguous_format:
            # Only the grouped convolutions take the layout: the bmm layers view their weights as
            # (K, out, in·kh·kw) matrices, which a channels_last weight cannot be viewed as.
            for m in packed.modules():
                if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                    m.to(memory_format=memory_format)
        return packed

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


@dataclass
class JobNetworks:
    """A job's generator and critic modules and how the training iteration calls them.

    `generate(z, y)`: noise (B, K, latent_dim) -> images (B, K, C, H, W); `score(x, y)`: images
    (B, K, C, H, W) -> scores (B, K); member k is [:, k].  `y` is the conditional model's class
    indices (B,) and None for a per-label model.  `singles[k]`: a network of member k's own
    architecture, to hold its weights when its generator file is written.
    """

    gen: nn.Module
    critic: nn.Module
    k: int
    generate: Callable
    score: Callable
    singles: list[nn.Module]
    kernel: str | None  # the packed convolutions' kernel; None for the conditional model (not packed)

    def member_states(self, module_state: dict) -> list[dict]:
        """A state_dict of `gen` or `critic` (or of the generator's average) split into the members'."""
        return unpack_state_dict(module_state, self.k)


def job_networks(
    model: str,
    settings: dict,
    channels: int,
    resolution: int,
    seed: int,
    seed_labels: list[int],
    device,
    *,
    num_classes: int = 1,
    kernel: str = "grouped",
    memory_format: torch.memory_format = torch.contiguous_format,
) -> JobNetworks:
    """The freshly initialised networks of a job whose members have the seeds of `seed_labels`: K
    labels of a per-label model packed (`kernel`), or the one conditional model over `num_classes`."""
    if models.get(model).conditional:
        (seed_label,) = seed_labels
        gen, critic = build_networks(model, settings, channels, resolution, seed, seed_label, device, num_classes)
        if memory_format != torch.contiguous_format:
            gen.to(memory_format=memory_format)
            critic.to(memory_format=memory_format)
        return JobNetworks(
            gen,
            critic,
            1,
            # One member: the (B, 1, ...) views of the job's calling convention around the plain networks.
            generate=lambda z, y: gen(z[:, 0], y).unsqueeze(1),
            score=lambda x, y: critic(x[:, 0].contiguous(memory_format=memory_format), y).unsqueeze(1),
            singles=[copy.deepcopy(gen)],
            kernel=None,
        )
    nets = [build_networks(model, settings, channels, resolution, seed, label, device) for label in seed_labels]
    gen = PackedGenerator.from_networks([g for g, _ in nets], memory_format, kernel)
    critic = PackedCritic.from_networks([c for _, c in nets], memory_format, kernel)
    return JobNetworks(
        gen,
        critic,
        len(nets),
        generate=lambda z, y: gen(z),
        score=lambda x, y: critic(x),
        singles=[g for g, _ in nets],
        kernel=kernel,
    )
