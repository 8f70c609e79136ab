"""Adversarial losses: WGAN-GP (Gulrajani et al. 2017) and the non-saturating BCE loss of DCGAN.

Each critic loss returns the scalar to minimise and a dict of detached diagnostics for the log
(the Wasserstein estimate E[D(real)] - E[D(fake)] and the gradient penalty for WGAN-GP).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def gradient_penalty(critic, real: torch.Tensor, fake: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Mean of (||grad_x D(x)||_2 - 1)^2 at random points on lines between real and fake samples."""
    alpha = torch.rand(real.shape[0], 1, 1, 1, device=real.device, generator=generator, dtype=real.dtype)
    x = (alpha * real + (1 - alpha) * fake).requires_grad_(True)
    (grad,) = torch.autograd.grad(critic(x).sum(), x, create_graph=True)
    return (grad.flatten(1).norm(dim=1) - 1).square().mean()


def wgan_gp_critic_loss(critic, real, fake, gp_lambda: float, generator: torch.Generator):
    d_real = critic(real).mean()
    d_fake = critic(fake).mean()
    gp = gradient_penalty(critic, real, fake, generator)
    wasserstein = d_real - d_fake
    return -wasserstein + gp_lambda * gp, {"wasserstein_estimate": wasserstein.detach(), "gradient_penalty": gp.detach()}


def wgan_generator_loss(critic, fake):
    return -critic(fake).mean()


def bce_discriminator_loss(critic, real, fake):
    logits_real = critic(real)
    logits_fake = critic(fake)
    loss = F.binary_cross_entropy_with_logits(logits_real, torch.ones_like(logits_real)) + F.binary_cross_entropy_with_logits(
        logits_fake, torch.zeros_like(logits_fake)
    )
    return loss, {}


def bce_generator_loss(critic, fake):
    """Non-saturating generator loss: -log D(G(z))."""
    logits = critic(fake)
    return F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits))
