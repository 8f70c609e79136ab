"""Generator and critic networks, DCGAN-shaped, scaled to the image resolution and channel count.

Both are the per-label networks of the papers: a generator of transposed convolutions with batch
norm, ReLU and tanh, and a strided-convolution critic/discriminator with LeakyReLU(0.2).  The
number of up/down-sampling blocks follows the resolution (16, 32, 64, 128: 4x4 -> R), and the
channel width doubles at every halving of the spatial size, starting from `width` at full
resolution (width=64 at 64x64 gives the authors' 512-256-128-64 DCGAN).  WGAN-GP needs a critic
without batch norm (the gradient penalty is per sample), so `critic_norm` selects it.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .plan import RESOLUTIONS, network_resolution  # noqa: F401 (torch-free: the Snakefile sizes wall times with it)


def _blocks(resolution: int) -> int:
    if resolution not in RESOLUTIONS:
        raise ValueError(f"resolution {resolution} not supported; choose one of {RESOLUTIONS}")
    return int(math.log2(resolution // 4))


class Generator(nn.Module):
    def __init__(self, latent_dim: int, channels: int, resolution: int, width: int):
        super().__init__()
        self.latent_dim = latent_dim
        n = _blocks(resolution)
        ch = width * 2 ** (n - 1)
        layers: list[nn.Module] = [
            nn.ConvTranspose2d(latent_dim, ch, 4, 1, 0, bias=False),
            nn.BatchNorm2d(ch),
            nn.ReLU(True),
        ]
        for _ in range(n - 1):
            layers += [nn.ConvTranspose2d(ch, ch // 2, 4, 2, 1, bias=False), nn.BatchNorm2d(ch // 2), nn.ReLU(True)]
            ch //= 2
        layers += [nn.ConvTranspose2d(ch, channels, 4, 2, 1), nn.Tanh()]
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z.view(z.shape[0], self.latent_dim, 1, 1))


class Critic(nn.Module):
    """Scores images with one unbounded real number each (a WGAN critic or a GAN discriminator's logit)."""

    def __init__(self, channels: int, resolution: int, width: int, norm: str = "none"):
        super().__init__()
        if norm not in ("none", "batch"):
            raise ValueError(f"critic norm must be 'none' or 'batch', got {norm!r}")
        n = _blocks(resolution)
        ch = width
        layers: list[nn.Module] = [nn.Conv2d(channels, ch, 4, 2, 1), nn.LeakyReLU(0.2, True)]
        for _ in range(n - 1):
            layers.append(nn.Conv2d(ch, ch * 2, 4, 2, 1, bias=norm == "none"))
            if norm == "batch":
                layers.append(nn.BatchNorm2d(ch * 2))
            layers.append(nn.LeakyReLU(0.2, True))
            ch *= 2
        layers.append(nn.Conv2d(ch, 1, 4, 1, 0))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).view(x.shape[0])


def dcgan_init_(module: nn.Module) -> None:
    """DCGAN initialisation (Radford et al.): conv weights N(0, 0.02), batch-norm scales N(1, 0.02)
    (a conditional batch norm's per-class scales too)."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d) and m.affine:
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)
        elif isinstance(m, ConditionalBatchNorm2d):
            nn.init.normal_(m.scale.weight, 1.0, 0.02)
            nn.init.zeros_(m.shift.weight)


class ConditionalBatchNorm2d(nn.Module):
    """Batch norm whose scale and shift are looked up per class (de Vries et al. 2017)."""

    def __init__(self, num_features: int, num_classes: int):
        super().__init__()
        self.bn = nn.BatchNorm2d(num_features, affine=False)
        self.scale = nn.Embedding(num_classes, num_features)
        self.shift = nn.Embedding(num_classes, num_features)
        nn.init.ones_(self.scale.weight)
        nn.init.zeros_(self.shift.weight)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.bn(x) * self.scale(y)[:, :, None, None] + self.shift(y)[:, :, None, None]


class ConditionalGenerator(nn.Module):
    """The per-label Generator's architecture for all labels at once: batch norm made class-conditional.

    Labels are indices 0..num_classes-1 into the selected labels (the caller maps dataset labels).
    """

    def __init__(self, latent_dim: int, channels: int, resolution: int, width: int, num_classes: int):
        super().__init__()
        self.latent_dim = latent_dim
        n = _blocks(resolution)
        ch = width * 2 ** (n - 1)
        self.convs = nn.ModuleList([nn.ConvTranspose2d(latent_dim, ch, 4, 1, 0, bias=False)])
        self.norms = nn.ModuleList([ConditionalBatchNorm2d(ch, num_classes)])
        for _ in range(n - 1):
            self.convs.append(nn.ConvTranspose2d(ch, ch // 2, 4, 2, 1, bias=False))
            self.norms.append(ConditionalBatchNorm2d(ch // 2, num_classes))
            ch //= 2
        self.out = nn.ConvTranspose2d(ch, channels, 4, 2, 1)

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        x = z.view(z.shape[0], self.latent_dim, 1, 1)
        for conv, norm in zip(self.convs, self.norms):
            x = torch.relu(norm(conv(x), y))
        return torch.tanh(self.out(x))


class ProjectionCritic(nn.Module):
    """The per-label Critic's trunk with a projection head (Miyato & Koyama 2018):
    D(x, y) = w·φ(x) + embed(y)·φ(x), φ(x) the trunk's 4×4 feature map, flattened.  `norm` as the
    Critic's: none for a WGAN-GP critic, batch for a DCGAN discriminator."""

    def __init__(self, channels: int, resolution: int, width: int, num_classes: int, norm: str = "none"):
        super().__init__()
        trunk = Critic(channels, resolution, width, norm=norm).net
        self.trunk = nn.Sequential(*list(trunk)[:-1])  # everything but the final 4x4 -> 1 convolution
        features = trunk[-1].in_channels * 16
        self.linear = nn.Linear(features, 1)
        self.embed = nn.Embedding(num_classes, features)
        nn.init.normal_(self.embed.weight, 0.0, 0.02)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        h = self.trunk(x).flatten(1)
        return self.linear(h).squeeze(1) + (self.embed(y) * h).sum(1)


# ----------------------------------------------------------------------------- memory estimates
# What the networks' passes hold at once, from the architecture alone (labelwise.memory compares it
# with what is available before the allocation).  Floats are 4 bytes.


def _generator_sizes(latent_dim: int, channels: int, resolution: int, width: int) -> list[int]:
    """Values per image of the generator's input and of each block's output, in order."""
    n = _blocks(resolution)
    ch, side = width * 2 ** (n - 1), 4
    sizes = [latent_dim, ch * side * side]
    for _ in range(n - 1):
        ch, side = ch // 2, side * 2
        sizes.append(ch * side * side)
    return sizes + [channels * resolution * resolution]


def _critic_sizes(channels: int, resolution: int, width: int) -> list[int]:
    n = _blocks(resolution)
    ch, side = width, resolution // 2
    sizes = [channels * resolution * resolution, ch * side * side]
    for _ in range(n - 1):
        ch, side = ch * 2, side // 2
        sizes.append(ch * side * side)
    return sizes + [1]


def generation_bytes(latent_dim: int, channels: int, resolution: int, width: int, batch: int) -> int:
    """Bytes a no-grad generator pass over `batch` images holds at its peak: one block's input, its
    convolution's output and its batch norm's output (ReLU works in place)."""
    sizes = _generator_sizes(latent_dim, channels, resolution, width)
    return 4 * batch * max(a + 2 * b for a, b in zip(sizes, sizes[1:]))


def training_bytes(
    latent_dim: int, channels: int, resolution: int, width: int, batch: int, num_classes: int = 0
) -> int:
    """A lower bound of the bytes one training step holds: both networks' weights with their gradients
    and two Adam moments, and every block output of both passes kept for the backward pass together
    with its gradient.  Batch norm copies, the gradient penalty's second pass and the optimiser's work
    space come on top, so what does not fit by this count cannot fit at all."""
    with torch.device("meta"):  # shapes only
        gen = (
            ConditionalGenerator(latent_dim, channels, resolution, width, num_classes)
            if num_classes
            else Generator(latent_dim, channels, resolution, width)
        )
        critic = Critic(channels, resolution, width)
    params = sum(p.numel() for net in (gen, critic) for p in net.parameters())
    activations = sum(_generator_sizes(latent_dim, channels, resolution, width)) + sum(
        _critic_sizes(channels, resolution, width)
    )
    return 4 * (4 * params + 2 * batch * activations)
