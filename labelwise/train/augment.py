"""Differentiable augmentation (DiffAugment, Zhao et al. 2020) of every image the critic sees.

A per-label GAN sees only its own label's images (500 for mnist5k, CIFAR-100, cifar10-mini), the
regime in which the critic memorises the training set.  DiffAugment transforms real and generated
images alike, with differentiable operations, before every critic call — real, fake, the gradient
penalty's interpolates and the generator step — so the generator is trained through the transform
and learns the untransformed distribution.  `models.<name>.augment: diffaugment` turns it on; the
policy (`augment_policy`) chooses among the published operations:

* ``color``: per image, brightness + U(-0.5, 0.5); saturation: the distance to the per-pixel channel
  mean scaled by U(0, 2); contrast: the distance to the image mean scaled by U(0.5, 1.5);
* ``translation``: a shift by up to 1/8 of the image size along each axis, vacated pixels zero;
* ``cutout``: a square of half the image size, centred at a uniformly random pixel (clipped at the
  borders), set to zero.

Zero is mid-grey in the networks' [-1, 1] range.  On a black background (MNIST) the grey borders
and squares were learned by the generators at CPU budgets (docs/quality.md), so `config.yaml`'s
DC-CGAN uses the colour operations only; on natural images the full policy is the published one.

The transform is one function of the image and of its random draws (`draw`, `apply`), so real
and generated images are treated identically.  Draws come from the label's own device stream
(`label_generators`), one call per critic call, in a fixed order; packed training (K labels,
images (B, K, C, H, W)) draws each label's parameters from that label's stream, so it draws what K
separate runs draw and stays equal to them up to rounding.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..errors import LabelwiseError

AUGMENTS = ("none", "diffaugment")
OPERATIONS = ("color", "translation", "cutout")
TRANSLATION_RATIO = 0.125  # of the image size: the published setting
CUTOUT_RATIO = 0.5


def policy_of(settings: dict) -> tuple[str, ...]:
    """The operations a model's settings ask for, in the fixed order of OPERATIONS; () when off."""
    augment = settings.get("augment", "none") or "none"
    if augment not in AUGMENTS:
        raise LabelwiseError(f"models.<name>.augment must be one of {', '.join(AUGMENTS)}, got {augment!r}")
    if augment == "none":
        return ()
    policy = list(settings.get("augment_policy") or OPERATIONS)
    bad = [op for op in policy if op not in OPERATIONS]
    if bad:
        raise LabelwiseError(
            f"models.<name>.augment_policy: unknown operation(s) {bad}; choose from {', '.join(OPERATIONS)}"
        )
    return tuple(op for op in OPERATIONS if op in policy)


def draw(policy: tuple[str, ...], n: int, size: tuple[int, int], generator: torch.Generator, device) -> dict:
    """The random parameters of `n` images' transforms, drawn from `generator` in a fixed order."""
    h, w = size
    p: dict[str, torch.Tensor] = {}
    if "color" in policy:
        p["brightness"] = torch.rand(n, device=device, generator=generator) - 0.5
        p["saturation"] = torch.rand(n, device=device, generator=generator) * 2.0
        p["contrast"] = torch.rand(n, device=device, generator=generator) + 0.5
    if "translation" in policy:
        sh, sw = int(h * TRANSLATION_RATIO + 0.5), int(w * TRANSLATION_RATIO + 0.5)
        p["shift_y"] = torch.randint(-sh, sh + 1, (n,), device=device, generator=generator)
        p["shift_x"] = torch.randint(-sw, sw + 1, (n,), device=device, generator=generator)
    if "cutout" in policy:
        p["cut_y"] = torch.randint(0, h, (n,), device=device, generator=generator)
        p["cut_x"] = torch.randint(0, w, (n,), device=device, generator=generator)
    return p


def apply(x: torch.Tensor, p: dict) -> torch.Tensor:
    """`x` (N, C, H, W) transformed by the parameters `p` (one entry per image); differentiable in x."""
    n, _, h, w = x.shape
    if "brightness" in p:
        x = x + p["brightness"].view(n, 1, 1, 1).to(x.dtype)
        mean = x.mean(dim=1, keepdim=True)
        x = (x - mean) * p["saturation"].view(n, 1, 1, 1).to(x.dtype) + mean
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        x = (x - mean) * p["contrast"].view(n, 1, 1, 1).to(x.dtype) + mean
    if "shift_y" in p:
        # out[i, j] = x[i - dy, j - dx] where that pixel exists, else 0: a gather from the zero-padded image.
        sh, sw = int(h * TRANSLATION_RATIO + 0.5), int(w * TRANSLATION_RATIO + 0.5)
        padded = torch.nn.functional.pad(x, (sw, sw, sh, sh))
        rows = torch.arange(h, device=x.device).view(1, h) - p["shift_y"].view(n, 1) + sh  # (N, H)
        cols = torch.arange(w, device=x.device).view(1, w) - p["shift_x"].view(n, 1) + sw  # (N, W)
        batch = torch.arange(n, device=x.device).view(n, 1, 1)
        x = padded[batch, :, rows.view(n, h, 1), cols.view(n, 1, w)].permute(0, 3, 1, 2)  # (N, H, W, C) -> NCHW
    if "cut_y" in p:
        ch, cw = int(h * CUTOUT_RATIO + 0.5), int(w * CUTOUT_RATIO + 0.5)
        top = (p["cut_y"] - ch // 2).view(n, 1)
        left = (p["cut_x"] - cw // 2).view(n, 1)
        r = torch.arange(h, device=x.device).view(1, h)
        c = torch.arange(w, device=x.device).view(1, w)
        inside_r = (r >= top) & (r < top + ch)  # (N, H)
        inside_c = (c >= left) & (c < left + cw)  # (N, W)
        keep = ~(inside_r.view(n, 1, h, 1) & inside_c.view(n, 1, 1, w))
        x = x * keep.to(x.dtype)
    return x


def augmenter(policy: tuple[str, ...], generators: list[torch.Generator]) -> Callable[[torch.Tensor], torch.Tensor]:
    """The transform of one critic input: (B, C, H, W) with one generator (a label's run), or
    (B, K, C, H, W) with K generators (packed training; label k's images take label k's draws)."""

    def transform(x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 4:
            (gen,) = generators
            return apply(x, draw(policy, x.shape[0], x.shape[-2:], gen, x.device))
        b, k = x.shape[:2]
        per_label = [draw(policy, b, x.shape[-2:], gen, x.device) for gen in generators]
        # (B, K) parameters, flattened B-major like the images' (B*K, C, H, W) view.
        p = {name: torch.stack([d[name] for d in per_label], dim=1).reshape(b * k) for name in per_label[0]}
        return apply(x.reshape(b * k, *x.shape[2:]), p).view(x.shape)

    return transform


def augmented_critic(critic: Callable, policy: tuple[str, ...], generators: list[torch.Generator]) -> Callable:
    """`critic` with every input transformed first (new draws per call); `critic` itself when no policy."""
    if not policy:
        return critic
    transform = augmenter(policy, generators)

    def forward(x, *args, **kwargs):
        return critic(transform(x), *args, **kwargs)

    return forward
