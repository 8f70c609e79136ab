"""The reference training loop: per-label WGAN-GP / DCGAN written as plain PyTorch.

Same networks (labelwise.nets), batch, losses and optimizer as `train_label`, with none of its
machinery (no checkpoints, log rows, divergence checks, resumable random streams, signal
handling), written the way the published per-label GAN code is: the benchmark's yardstick for
labelwise's overhead, and the loop on which speed options (channels_last, torch.compile) are
tried without touching labelwise's defaults.
"""
from __future__ import annotations

import time

import torch
import torch.nn.functional as F

from labelwise.images import read_images
from labelwise.nets import Critic, Generator, dcgan_init_, network_resolution


class PlainGAN:
    def __init__(self, shard, model: str, settings: dict, seed: int = 0, *, channels_last: bool = False,
                 compile: bool = False):
        images, _ = read_images(shard)
        c, h, w = images.shape[1:]
        r = network_resolution(max(h, w))
        x = torch.from_numpy(images).float().div_(127.5).sub_(1.0)
        x = F.pad(x, ((r - w) // 2, r - w - (r - w) // 2, (r - h) // 2, r - h - (r - h) // 2), value=-1.0)
        self.fmt = torch.channels_last if channels_last else torch.contiguous_format
        self.data = x.contiguous(memory_format=self.fmt)
        self.wgan = model == "wcgan"
        self.bs, self.latent = int(settings["batch_size"]), int(settings["latent_dim"])
        self.critic_steps, self.lam = int(settings["critic_steps"]), float(settings.get("gp_lambda", 10.0))
        torch.manual_seed(seed)
        self.G = Generator(self.latent, c, r, int(settings["width"]))
        self.D = Critic(c, r, int(settings["width"]), norm="none" if self.wgan else "batch")
        if not self.wgan:
            dcgan_init_(self.G)
            dcgan_init_(self.D)
        self.G.to(memory_format=self.fmt)
        self.D.to(memory_format=self.fmt)
        betas = tuple(settings["betas"])
        self.opt_g = torch.optim.Adam(self.G.parameters(), lr=float(settings["lr"]), betas=betas)
        self.opt_d = torch.optim.Adam(self.D.parameters(), lr=float(settings["lr"]), betas=betas)
        # torch.compile cannot differentiate twice (the gradient penalty), so only for DCGAN.
        self.g_fwd = torch.compile(self.G) if compile else self.G
        self.d_fwd = torch.compile(self.D) if compile else self.D

    def step(self) -> None:
        G, D, bs = self.g_fwd, self.d_fwd, self.bs
        self.D.requires_grad_(True)
        for _ in range(self.critic_steps):
            real = self.data[torch.randint(self.data.shape[0], (bs,))]
            with torch.no_grad():
                fake = G(torch.randn(bs, self.latent))
            if self.wgan:
                loss = D(fake).mean() - D(real).mean()
                a = torch.rand(bs, 1, 1, 1)
                xi = (a * real + (1 - a) * fake).requires_grad_(True)
                (g,) = torch.autograd.grad(D(xi).sum(), xi, create_graph=True)
                loss = loss + self.lam * (g.flatten(1).norm(dim=1) - 1).square().mean()
            else:
                lr_, lf = D(real), D(fake)
                loss = (F.binary_cross_entropy_with_logits(lr_, torch.ones_like(lr_))
                        + F.binary_cross_entropy_with_logits(lf, torch.zeros_like(lf)))
            self.opt_d.zero_grad(set_to_none=True)
            loss.backward()
            self.opt_d.step()
        self.D.requires_grad_(False)
        out = D(G(torch.randn(bs, self.latent)))
        g_loss = -out.mean() if self.wgan else F.binary_cross_entropy_with_logits(out, torch.ones_like(out))
        self.opt_g.zero_grad(set_to_none=True)
        g_loss.backward()
        self.opt_g.step()

    def timed_steps(self, n: int) -> float:
        t0 = time.perf_counter()
        for _ in range(n):
            self.step()
        return time.perf_counter() - t0


def plain_train(shard, model: str, settings: dict, iterations: int, out_path) -> None:
    """A whole plain run, setup to saved generator: the reference for a whole `train_label` call."""
    gan = PlainGAN(shard, model, settings)
    gan.timed_steps(iterations)
    torch.save(gan.G.state_dict(), out_path)
