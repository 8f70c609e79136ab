"""The reference training loop: per-label WGAN-GP / DCGAN written as plain PyTorch.

Same networks (labelwise.nets), batch, losses and optimizer as `train_job`, with none of its
machinery (no checkpoints, log rows, divergence checks, resumable random streams, signal
handling), written the way the published per-label GAN code is: the benchmark's yardstick for
labelwise's overhead, and the loop on which speed options (channels_last, torch.compile, bf16
autocast, where the data live) are tried without touching labelwise's defaults.

On the CPU (the default device) the loop is what it always was: images, batch indices, noise and
networks on the CPU.  On a GPU (`device='cuda'`) the images are moved to the device once and batch
indices and noise are drawn there, so a step never waits for the host; `cpu_indices=True` draws
the indices on the CPU and copies them each critic step (a blocking copy, i.e. one host-device
synchronisation per critic step; the one-label loop drew them per critic step until issue 22), and
`data_on_device=False` keeps the images on the host and copies each batch.

`autocast_bf16=True` runs every forward pass and loss under `torch.autocast(device_type,
dtype=torch.bfloat16)`; the backward passes (`loss.backward()` and the gradient penalty's
`torch.autograd.grad`) run outside autocast, as PyTorch recommends.  The gradient penalty: its
interpolates are fp32 leaves, so the gradient with respect to them comes back in fp32 (computed
through the critic's bf16 kernels), and the norm, penalty and every loss are reduced in fp32
(`.float()` on each score).  `gp_fp32=True` also runs the penalty's critic pass, and so its
double backward, entirely in fp32 (autocast off there), for comparison.  bf16 needs no loss scaling.
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F

from labelwise.images import read_images
from labelwise.nets import Critic, Generator, dcgan_init_, network_resolution


class PlainGAN:
    def __init__(
        self,
        shard,
        model: str,
        settings: dict,
        seed: int = 0,
        *,
        channels_last: bool = False,
        compile: bool = False,
        compile_mode: str | None = None,
        device: str | torch.device = "cpu",
        autocast_bf16: bool = False,
        gp_fp32: bool = False,
        data_on_device: bool = True,
        cpu_indices: bool = False,
    ):
        images, _ = read_images(shard)
        c, h, w = images.shape[1:]
        r = network_resolution(max(h, w))
        x = torch.from_numpy(images).float().div_(127.5).sub_(1.0)
        x = F.pad(x, ((r - w) // 2, r - w - (r - w) // 2, (r - h) // 2, r - h - (r - h) // 2), value=-1.0)
        self.dev = torch.device(device)
        self.fmt = torch.channels_last if channels_last else torch.contiguous_format
        self.host_data = not data_on_device and self.dev.type != "cpu"
        self.cpu_indices = cpu_indices or self.host_data or self.dev.type == "cpu"
        x = x.contiguous(memory_format=self.fmt)
        self.data = x if self.host_data else x.to(self.dev)
        self.wgan = model == "wcgan"
        self.bs, self.latent = int(settings["batch_size"]), int(settings["latent_dim"])
        self.critic_steps, self.lam = int(settings["critic_steps"]), float(settings.get("gp_lambda", 10.0))
        torch.manual_seed(seed)
        # Built and initialised on the CPU, then moved: the same initial weights on every device.
        self.G = Generator(self.latent, c, r, int(settings["width"]))
        self.D = Critic(c, r, int(settings["width"]), norm="none" if self.wgan else "batch")
        if not self.wgan:
            dcgan_init_(self.G)
            dcgan_init_(self.D)
        self.G.to(self.dev, memory_format=self.fmt)
        self.D.to(self.dev, memory_format=self.fmt)
        betas = tuple(settings["betas"])
        self.opt_g = torch.optim.Adam(self.G.parameters(), lr=float(settings["lr"]), betas=betas)
        self.opt_d = torch.optim.Adam(self.D.parameters(), lr=float(settings["lr"]), betas=betas)
        self.amp, self.gp_fp32 = bool(autocast_bf16), bool(gp_fp32)
        # torch.compile cannot differentiate twice (the gradient penalty), so only for DCGAN.
        self.g_fwd = torch.compile(self.G, mode=compile_mode) if compile else self.G
        self.d_fwd = torch.compile(self.D, mode=compile_mode) if compile else self.D
        self.cudagraphs = bool(compile) and compile_mode == "reduce-overhead"

    def _amp(self, enabled: bool | None = None):
        return torch.autocast(self.dev.type, dtype=torch.bfloat16, enabled=self.amp if enabled is None else enabled)

    def _sync(self) -> None:
        if self.dev.type == "cuda":
            torch.cuda.synchronize(self.dev)

    def real_batch(self) -> torch.Tensor:
        if self.cpu_indices:
            idx = torch.randint(self.data.shape[0], (self.bs,))
            return self.data[idx].to(self.dev) if self.host_data else self.data[idx.to(self.dev)]
        return self.data[torch.randint(self.data.shape[0], (self.bs,), device=self.dev)]

    def critic_loss(self, real: torch.Tensor, z: torch.Tensor, alpha: torch.Tensor | None = None):
        """(loss to minimise, -Wasserstein estimate or None, gradient penalty or None), all fp32."""
        G, D = self.g_fwd, self.d_fwd
        with self._amp():
            with torch.no_grad():
                fake = G(z).float()
            if self.wgan:
                neg_w = D(fake).float().mean() - D(real).float().mean()
            else:
                lr_, lf = D(real).float(), D(fake).float()
                return (
                    (
                        F.binary_cross_entropy_with_logits(lr_, torch.ones_like(lr_))
                        + F.binary_cross_entropy_with_logits(lf, torch.zeros_like(lf))
                    ),
                    None,
                    None,
                )
        a = torch.rand(self.bs, 1, 1, 1, device=self.dev) if alpha is None else alpha
        xi = (a * real + (1 - a) * fake).requires_grad_(True)
        with self._amp(self.amp and not self.gp_fp32):
            score = D(xi).float().sum()
        (g,) = torch.autograd.grad(score, xi, create_graph=True)  # fp32: xi is an fp32 leaf
        gp = (g.float().flatten(1).norm(dim=1) - 1).square().mean()
        return neg_w + self.lam * gp, neg_w.detach(), gp.detach()

    def step(self) -> None:
        if self.cudagraphs:
            torch.compiler.cudagraph_mark_step_begin()
        G, D, bs = self.g_fwd, self.d_fwd, self.bs
        self.D.requires_grad_(True)
        for _ in range(self.critic_steps):
            real = self.real_batch()
            z = torch.randn(bs, self.latent, device=self.dev)
            loss, _, _ = self.critic_loss(real, z)
            self.opt_d.zero_grad(set_to_none=True)
            loss.backward()
            self.opt_d.step()
        self.D.requires_grad_(False)
        z = torch.randn(bs, self.latent, device=self.dev)
        with self._amp():
            out = D(G(z)).float()
            g_loss = -out.mean() if self.wgan else F.binary_cross_entropy_with_logits(out, torch.ones_like(out))
        self.opt_g.zero_grad(set_to_none=True)
        g_loss.backward()
        self.opt_g.step()

    def timed_steps(self, n: int) -> float:
        """Seconds for n steps; on a GPU the device is synchronised before and after."""
        self._sync()
        t0 = time.perf_counter()
        for _ in range(n):
            self.step()
        self._sync()
        return time.perf_counter() - t0


def plain_train(shard, model: str, settings: dict, iterations: int, out_path) -> None:
    """A whole plain run, setup to saved generator: the reference for a whole one-label `train_job` call."""
    gan = PlainGAN(shard, model, settings)
    gan.timed_steps(iterations)
    torch.save(gan.G.state_dict(), out_path)
