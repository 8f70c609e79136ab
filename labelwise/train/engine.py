"""The training iteration, one for every job, written so that a GPU never waits for the host.

`TrainingIteration` runs one generator iteration — `critic_steps` critic steps, then one generator
step — of a job's K members on the job's networks (`labelwise.train.networks.JobNetworks`: K labels
of a per-label model packed into one module, K=1 for one label, or the conditional model), with the
model's loss object (`labelwise.losses.loss_for`).  The training loop calls it once per iteration,
the compute budget counts its FLOPs on the meta device (`labelwise.train.compute`), and benchmark
case `engine` times it.

Each member draws from its own random streams (`label_generators`) exactly what a job of its own
draws: batch indices (and the conditional model's classes) on the CPU, noise, gradient-penalty
mixing and augmentation on the device.  An iteration's indices are drawn at once and copied in
one non-blocking copy; the losses stay on the device; the forward passes run under bf16 autocast
on request (`autocast_forward`); on CUDA the iteration can be captured in a CUDA graph and
replayed.  Details: docs/packed-training.md ("One iteration without waiting for the host").
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable

import torch

from ..seeds import CPU_STREAM, DEVICE_STREAM, stream_seed
from .augment import augmented_critic

log = logging.getLogger("labelwise.train")

PRECISIONS = ("fp32", "bf16")
GRAPH_WARMUP = 3  # eager iterations before capture (real iterations of the run: cuDNN/cuBLAS set-up, Adam states)


def label_generators(seed: int, label: int, device) -> tuple[torch.Generator, torch.Generator]:
    """A member's two random streams: batch indices on the CPU, noise (and GP mixing, augmentation)
    on the device; `label` is its seed slot (`labelwise.seeds`)."""
    rng_cpu = torch.Generator().manual_seed(stream_seed(seed, label, CPU_STREAM))
    rng_dev = torch.Generator(device=device).manual_seed(stream_seed(seed, label, DEVICE_STREAM))
    return rng_cpu, rng_dev


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


class TrainingIteration:
    """One generator iteration of a job's K members; calling it returns the (4, K) per-member
    diagnostics (d_loss, g_loss, gradient penalty, Wasserstein estimate; NaN where the loss has
    none) on the device.

    `networks`: the job's `JobNetworks`; `pool`: every member's images in one tensor (N_total, C, H, W)
    on the device, member k's in rows offsets[k] .. offsets[k] + counts[k]; `rngs`: each member's
    (CPU, device) generators; `classes`: the conditional model's class index of every pool row (its
    batches' classes, and the generator step's classes drawn like a batch), None for per-label models.
    """

    def __init__(
        self,
        networks,
        opt_g,
        opt_d,
        loss,
        pool: torch.Tensor,
        counts: list[int],
        rngs: list,
        *,
        batch_size: int,
        latent_dim: int,
        critic_steps: int,
        classes: torch.Tensor | None = None,
        precision: str = "fp32",
        cuda_graph: bool = False,
        augment: tuple[str, ...] = (),
    ):
        self.gen, self.critic, self.opt_g, self.opt_d, self.loss = networks.gen, networks.critic, opt_g, opt_d, loss
        self.pool, self.counts, self.rngs, self.classes = pool, list(counts), rngs, classes
        self.k, self.dev = len(counts), pool.device
        self.bs, self.latent_dim, self.critic_steps = batch_size, latent_dim, critic_steps
        # The conditional model draws the generator step's classes like one more batch.
        self.draws = critic_steps + (classes is not None)
        self.G = autocast_forward(networks.generate, self.dev, precision)
        self._score, self._augment = autocast_forward(networks.score, self.dev, precision), augment
        self._augment_critic()
        self.offsets = torch.tensor([sum(self.counts[:i]) for i in range(self.k)], device=self.dev).view(1, -1, 1)
        self.nan = torch.full((self.k,), float("nan"), device=self.dev)
        self.graph_wanted = bool(cuda_graph) and self.dev.type == "cuda"
        self.graph = None
        self.eager_calls = 0
        self._static_idx = None
        self._static_out = None

    def _augment_critic(self) -> None:
        # DiffAugment (`labelwise.train.augment`): member k's critic inputs take draws from its device stream.
        self.D = augmented_critic(self._score, self._augment, [r for _, r in self.rngs])

    # -- random draws, each from its member's own stream ----------------------------------------
    def draw_indices(self) -> torch.Tensor:
        """(draws, K, B) rows of `pool`: member k's from its CPU stream, step after step."""
        draws = [
            [torch.randint(n, (self.bs,), generator=rng_cpu) for n, (rng_cpu, _) in zip(self.counts, self.rngs)]
            for _ in range(self.draws)
        ]
        return torch.stack([torch.stack(step) for step in draws])

    def noise(self) -> torch.Tensor:
        return torch.stack(
            [torch.randn(self.bs, self.latent_dim, device=self.dev, generator=rng_dev) for _, rng_dev in self.rngs],
            dim=1,
        )

    def mixing(self) -> torch.Tensor:  # gradient_penalty's alpha, drawn per member from its stream
        return torch.stack(
            [torch.rand(self.bs, 1, 1, 1, device=self.dev, generator=rng_dev) for _, rng_dev in self.rngs], dim=1
        )

    # -- the iteration --------------------------------------------------------------------------
    def _body(self, idx: torch.Tensor) -> torch.Tensor:
        """The iteration on device indices idx (draws, K, B): only device work, no host sync."""
        rows = (idx + self.offsets).view(self.draws, -1)

        def classes(step: int):  # the conditional model's classes of a draw; None for per-label models
            return None if self.classes is None else self.classes.index_select(0, rows[step])

        self.critic.requires_grad_(True)
        for step in range(self.critic_steps):
            real = self.pool.index_select(0, rows[step]).view(self.k, self.bs, *self.pool.shape[1:]).transpose(0, 1)
            y = classes(step)  # fakes of the real batch's classes
            z = self.noise()
            with torch.no_grad():
                fake = self.G(z, y)
            # The mixing weights before the critic calls, whose augmentation draws from the same stream.
            alpha = self.mixing() if self.loss.needs_mixing else None
            d_loss, diag = self.loss.critic(functools.partial(self.D, y=y), real, fake, alpha)
            self.opt_d.zero_grad(set_to_none=True)
            d_loss.sum().backward()  # the sum: each member's parameters get its own loss's gradient
            self.opt_d.step()
        self.critic.requires_grad_(False)  # the generator step needs no critic gradients
        y = classes(self.critic_steps) if self.classes is not None else None  # the data's class frequencies
        fake = self.G(self.noise(), y)
        g_loss = self.loss.generator(functools.partial(self.D, y=y), fake)
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
        """Capture `_body` in a CUDA graph; on any failure stay eager, with every stream where it was,
        and say why in one warning."""
        why = graph_unsupported(self.opt_g, self.opt_d)
        graph = None
        streams = [rng_dev.get_state() for _, rng_dev in self.rngs]
        if why is None:
            try:
                graph = torch.cuda.CUDAGraph()
                register = getattr(graph, "register_generator_state", None)
                if register is None:
                    raise RuntimeError(
                        f"torch {torch.__version__} cannot register per-member random streams "
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
                self._restore_streams(streams)
        if graph is None:
            log.warning(
                "CUDA graph capture of the training iteration is not possible (%s); running eagerly, "
                "which can be several times slower at small K",
                why,
            )
            return
        self.graph = graph
        log.info("training iteration captured in a CUDA graph after %d eager iterations", self.eager_calls)

    def _restore_streams(self, states: list[torch.Tensor]) -> None:
        """After a failed capture: each member's device stream back to its state before the attempt, so
        that eager draws continue.  A generator that the abandoned capture left unable to draw (older
        torch versions) is replaced, in the shared `rngs` list the training loop checkpoints from, by a
        fresh one in that state."""
        for j, ((rng_cpu, rng_dev), state) in enumerate(zip(self.rngs, states)):
            try:
                rng_dev.set_state(state)
                torch.randn(1, device=self.dev, generator=rng_dev)  # can it draw?
                rng_dev.set_state(state)
            except RuntimeError:
                fresh = torch.Generator(device=self.dev)
                fresh.set_state(state)
                self.rngs[j] = (rng_cpu, fresh)
        self._augment_critic()


def graph_unsupported(*optimizers) -> str | None:
    """Why a training iteration with these optimizers cannot be captured in a CUDA graph; None if it can."""
    for opt in optimizers:
        if not all(group.get("capturable") for group in opt.param_groups):
            return "the optimizers were not built with capturable=True"
    return None
