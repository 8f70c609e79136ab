"""Adversarial losses: WGAN-GP (Gulrajani et al. 2017) and the non-saturating BCE loss of DCGAN.

Each critic loss returns the loss to minimise and a dict of detached diagnostics for the log (the
Wasserstein estimate E[D(real)] - E[D(fake)] and the gradient penalty for WGAN-GP).  Every mean is
over the batch dimension (the first) only, and the gradient penalty takes its norm over each
sample's image (the last three dimensions): for one network (scores (B,)) the losses are scalars,
for packed training (images (B, K, C, H, W), scores (B, K)) K per-label losses, each exactly the
loss that label's own network gets.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def gradient_penalty(
    critic, real: torch.Tensor, fake: torch.Tensor, generator: torch.Generator | None, alpha: torch.Tensor | None = None
) -> torch.Tensor:
    """Mean of (||grad_x D(x)||_2 - 1)^2 at random points on lines between real and fake samples.

    `alpha` (the mixing weights, drawn from `generator` when not given) lets packed training draw
    each label's weights from that label's own random stream.
    """
    if alpha is None:
        alpha = torch.rand(real.shape[0], 1, 1, 1, device=real.device, generator=generator, dtype=real.dtype)
    x = (alpha * real + (1 - alpha) * fake).requires_grad_(True)
    (grad,) = torch.autograd.grad(critic(x).sum(), x, create_graph=True)
    return (grad.flatten(-3).norm(dim=-1) - 1).square().mean(0)


def wgan_gp_critic_loss(critic, real, fake, gp_lambda: float, generator: torch.Generator | None, alpha=None):
    d_real = critic(real).mean(0)
    d_fake = critic(fake).mean(0)
    gp = gradient_penalty(critic, real, fake, generator, alpha)
    wasserstein = d_real - d_fake
    return -wasserstein + gp_lambda * gp, {
        "wasserstein_estimate": wasserstein.detach(),
        "gradient_penalty": gp.detach(),
    }


def wgan_generator_loss(critic, fake):
    return -critic(fake).mean(0)


def _bce(logits: torch.Tensor, target: float) -> torch.Tensor:
    return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, target), reduction="none").mean(0)


def bce_discriminator_loss(critic, real, fake):
    logits_real = critic(real)
    logits_fake = critic(fake)
    return _bce(logits_real, 1.0) + _bce(logits_fake, 0.0), {}


def bce_generator_loss(critic, fake):
    """Non-saturating generator loss: -log D(G(z))."""
    return _bce(critic(fake), 1.0)


class WassersteinGP:
    """WGAN-GP (models' loss "wgan-gp"): the critic loss with the gradient penalty at random mixes of
    real and generated images, whose mixing weights the iteration draws before the critic calls."""

    needs_mixing = True

    def __init__(self, gp_lambda: float):
        self.gp_lambda = float(gp_lambda)

    def critic(self, critic, real, fake, alpha):
        return wgan_gp_critic_loss(critic, real, fake, self.gp_lambda, None, alpha=alpha)

    def generator(self, critic, fake):
        return wgan_generator_loss(critic, fake)


class NonSaturatingBCE:
    """DCGAN's loss (models' loss "bce"): binary cross-entropy on the discriminator's logits."""

    needs_mixing = False

    def critic(self, critic, real, fake, alpha=None):
        return bce_discriminator_loss(critic, real, fake)

    def generator(self, critic, fake):
        return bce_generator_loss(critic, fake)


def loss_for(name: str, settings: dict):
    """The loss object of a model's registry entry (`labelwise.models.Model.loss`) with its settings."""
    if name == "wgan-gp":
        return WassersteinGP(settings.get("gp_lambda", 10.0))
    if name == "bce":
        return NonSaturatingBCE()
    raise ValueError(f"unknown loss {name!r}; known: wgan-gp, bce")
