"""The training iteration of packed training, written so that a GPU never waits for the host.

`PackedIteration` runs one generator iteration of K labels' GANs (`critic_steps` critic steps, then
one generator step) on packed networks; `train_packed` calls it once per iteration, and benchmark
case `engine` times it.  It draws an iteration's batch indices at once and copies them in one
non-blocking copy, keeps the losses on the device, runs the forward passes under bf16 autocast on
request (`autocast_forward`) and, on CUDA, can capture the iteration in a CUDA graph (not yet run
on a GPU); each label still draws exactly what `train_label` draws.  Details:
docs/packed-training.md ("One iteration without waiting for the host").
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch

from .. import losses
from .augment import augmented_critic

log = logging.getLogger("labelwise.train")

PRECISIONS = ("fp32", "bf16")
GRAPH_WARMUP = 3  # eager iterations before capture (real iterations of the run: cuDNN/cuBLAS set-up, Adam states)


def autocast_forward(net: Callable, device: torch.device, precision: str) -> Callable:
    """`net` called under bf16 autocast (precision 'bf16') with its output back in fp32; the net
    itself for 'fp32'.  Backward passes run outside autocast, in the dtypes the forward chose."""
    if precision == "fp32":
        return net
    if precision != "bf16":
        raise ValueError(f"runtime.precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")

    def forward(*args, **kwargs):
        # No cast cache: each call is its own autocast region (so the cache would save nothing), and
        # a CUDA graph capture must not keep casts cached across regions (PyTorch's AMP + graphs rule).
        with torch.autocast(device.type, dtype=torch.bfloat16, cache_enabled=False):
            out = net(*args, **kwargs)
        return out.float()

    return forward


def to_device(host: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A host tensor on `device` without making the host wait: a non-blocking copy from pinned
    memory on CUDA (the caching host allocator keeps the pinned copy alive until the copy is done)."""
    if device.type != "cuda":
        return host.to(device)
    return host.pin_memory().to(device, non_blocking=True)


class PackedIteration:
    """One generator iteration of K packed GANs; calling it returns the (4, K) per-label diagnostics
    (d_loss, g_loss, gradient penalty, Wasserstein estimate; NaN where the loss has none) on the device.

    `pool`: every label's images in one tensor (N_total, C, H, W) on the device; label k's images
    are rows offsets[k] .. offsets[k] + counts[k].  `rngs`: each label's (CPU, device) generators.
    """

    def __init__(
        self,
        gen,
        critic,
        opt_g,
        opt_d,
        pool: torch.Tensor,
        counts: list[int],
        rngs: list,
        *,
        batch_size: int,
        latent_dim: int,
        critic_steps: int,
        wgan: bool,
        gp_lambda: float,
        precision: str = "fp32",
        cuda_graph: bool = False,
        augment: tuple[str, ...] = (),
    ):
        self.gen, self.critic, self.opt_g, self.opt_d = gen, critic, opt_g, opt_d
        self.pool, self.counts, self.rngs = pool, list(counts), rngs
        self.k, self.dev = len(counts), pool.device
        self.bs, self.latent_dim, self.critic_steps = batch_size, latent_dim, critic_steps
        self.wgan, self.gp_lambda = wgan, gp_lambda
        self.G = autocast_forward(gen, self.dev, precision)
        # DiffAugment (`labelwise.train.augment`): label k's critic inputs take draws from label k's device stream.
        self.D = augmented_critic(autocast_forward(critic, self.dev, precision), augment, [r for _, r in rngs])
        self.offsets = torch.tensor([sum(self.counts[:i]) for i in range(self.k)], device=self.dev).view(1, -1, 1)
        self.nan = torch.full((self.k,), float("nan"), device=self.dev)
        self.graph_wanted = bool(cuda_graph) and self.dev.type == "cuda"
        self.graph = None
        self.eager_calls = 0
        self._static_idx = None
        self._static_out = None

    # -- random draws, each from its label's own stream ----------------------------------------
    def draw_indices(self) -> torch.Tensor:
        """(critic_steps, K, B) rows of `pool`: label k's from its CPU stream, step after step."""
        draws = [
            [torch.randint(n, (self.bs,), generator=rng_cpu) for n, (rng_cpu, _) in zip(self.counts, self.rngs)]
            for _ in range(self.critic_steps)
        ]
        return torch.stack([torch.stack(step) for step in draws])

    def noise(self) -> torch.Tensor:
        return torch.stack(
            [torch.randn(self.bs, self.latent_dim, device=self.dev, generator=rng_dev) for _, rng_dev in self.rngs],
            dim=1,
        )

    def mixing(self) -> torch.Tensor:  # gradient_penalty's alpha, drawn per label from the label's stream
        return torch.stack(
            [torch.rand(self.bs, 1, 1, 1, device=self.dev, generator=rng_dev) for _, rng_dev in self.rngs], dim=1
        )

    # -- the iteration --------------------------------------------------------------------------
    def _body(self, idx: torch.Tensor) -> torch.Tensor:
        """The iteration on device indices idx (critic_steps, K, B): only device work, no host sync."""
        rows = (idx + self.offsets).view(self.critic_steps, -1)
        self.critic.requires_grad_(True)
        for step in range(self.critic_steps):
            real = self.pool.index_select(0, rows[step]).view(self.k, self.bs, *self.pool.shape[1:]).transpose(0, 1)
            z = self.noise()
            with torch.no_grad():
                fake = self.G(z)
            if self.wgan:
                d_loss, diag = losses.wgan_gp_critic_loss(self.D, real, fake, self.gp_lambda, None, alpha=self.mixing())
            else:
                d_loss, diag = losses.bce_discriminator_loss(self.D, real, fake)
            self.opt_d.zero_grad(set_to_none=True)
            d_loss.sum().backward()  # the sum: each label's parameters get its own loss's gradient
            self.opt_d.step()
        self.critic.requires_grad_(False)
        fake = self.G(self.noise())
        g_loss = losses.wgan_generator_loss(self.D, fake) if self.wgan else losses.bce_generator_loss(self.D, fake)
        self.opt_g.zero_grad(set_to_none=True)
        g_loss.sum().backward()
        self.opt_g.step()
        return torch.stack(
            [
                d_loss.detach(),
                g_loss.detach(),
                diag.get("gradient_penalty", self.nan),
                diag.get("wasserstein_estimate", self.nan),
            ]
        )

    def __call__(self) -> torch.Tensor:
        idx = to_device(self.draw_indices(), self.dev)
        if self.graph is not None:
            self._static_idx.copy_(idx, non_blocking=True)
            self.graph.replay()
            return self._static_out.clone()
        if self.graph_wanted:  # warm-up before a capture runs on a side stream, as PyTorch requires
            side = torch.cuda.Stream(self.dev)
            side.wait_stream(torch.cuda.current_stream(self.dev))
            with torch.cuda.stream(side):
                out = self._body(idx)
            torch.cuda.current_stream(self.dev).wait_stream(side)
        else:
            out = self._body(idx)
        self.eager_calls += 1
        if self.graph_wanted and self.eager_calls >= GRAPH_WARMUP:
            self.graph_wanted = False  # one attempt
            self._capture(idx)
        return out

    def _capture(self, idx: torch.Tensor) -> None:
        """Capture `_body` in a CUDA graph; on any failure stay eager and say why, once."""
        why = graph_unsupported(self.opt_g, self.opt_d)
        graph = None
        if why is None:
            try:
                graph = torch.cuda.CUDAGraph()
                register = getattr(graph, "register_generator_state", None)
                if register is None:
                    raise RuntimeError(
                        f"torch {torch.__version__} cannot register per-label random streams "
                        "with a CUDA graph (CUDAGraph.register_generator_state)"
                    )
                for _, rng_dev in self.rngs:
                    register(rng_dev)
                self._static_idx = idx.clone()
                torch.cuda.synchronize(self.dev)
                # Capture records the kernels without running them: weights, Adam states and the random
                # streams (whose offsets the graph advances on every replay) are where eager left them.
                with torch.cuda.graph(graph):
                    self._static_out = self._body(self._static_idx)
            except Exception as exc:  # noqa: BLE001 - any capture failure means: eager, said once
                why = f"{type(exc).__name__}: {exc}"
                graph = None
                self._static_idx = self._static_out = None
        if graph is None:
            log.info("CUDA graph capture of the training iteration is not possible (%s); running eagerly", why)
            return
        self.graph = graph
        log.info("training iteration captured in a CUDA graph after %d eager iterations", self.eager_calls)


def graph_unsupported(*optimizers) -> str | None:
    """Why a training iteration with these optimizers cannot be captured in a CUDA graph; None if it can."""
    for opt in optimizers:
        if not all(group.get("capturable") for group in opt.param_groups):
            return "the optimizers were not built with capturable=True"
    return None
