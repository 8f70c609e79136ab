"""The training iteration captured in a CUDA graph computes what eager execution computes (CUDA only).

Two jobs built alike — the same networks, seeds, pool and capturable Adam (how `train_job` builds the
optimizers for a graph) — run a few iterations of `labelwise.train.engine.TrainingIteration`, one
eagerly and one with `cuda_graph=True` (eager for GRAPH_WARMUP iterations, captured at the last of
them, replayed after): the per-iteration losses, every weight and every member's random streams must
agree.  benchmarks/gpu_check.py checks the same at CIFAR-10 size, with EMA and forced capture failures.
"""

from __future__ import annotations

import pytest
import torch
from conftest import TINY_MODEL

from labelwise import losses, models
from labelwise.train.augment import policy_of
from labelwise.train.engine import GRAPH_WARMUP, TrainingIteration, label_generators
from labelwise.train.networks import job_networks

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a CUDA device")

IMAGES_PER_LABEL = 32
ITERATIONS = GRAPH_WARMUP + 3  # three replays


def run(model: str, settings: dict, k: int, kernel: str, precision: str, cuda_graph: bool):
    """ITERATIONS of a fresh job on CUDA: (its iteration, the (iterations, 4, K) diagnostics on the host)."""
    dev = torch.device("cuda")
    nets = job_networks(model, settings, 3, 16, 0, list(range(k)), dev, kernel=kernel)
    betas = tuple(settings["betas"])
    opt_g = torch.optim.Adam(nets.gen.parameters(), lr=settings["lr"], betas=betas, capturable=True)
    opt_d = torch.optim.Adam(nets.critic.parameters(), lr=settings["lr"], betas=betas, capturable=True)
    pixels = torch.Generator(device=dev).manual_seed(0)
    pool = torch.rand(k * IMAGES_PER_LABEL, 3, 16, 16, device=dev, generator=pixels) * 2 - 1
    step = TrainingIteration(
        nets,
        opt_g,
        opt_d,
        losses.loss_for(models.get(model).loss, settings),
        pool,
        [IMAGES_PER_LABEL] * k,
        [label_generators(0, j, dev) for j in range(k)],
        batch_size=settings["batch_size"],
        latent_dim=settings["latent_dim"],
        critic_steps=settings["critic_steps"],
        precision=precision,
        cuda_graph=cuda_graph,
        augment=policy_of(settings),
    )
    nets.gen.train()
    nets.critic.train()
    diagnostics = torch.stack([step() for _ in range(ITERATIONS)]).cpu()
    return step, diagnostics, nets


@pytest.mark.parametrize(
    ("model", "extra", "k", "kernel", "precision"),
    [
        ("wcgan", {}, 2, "bmm", "fp32"),
        ("wcgan", {}, 2, "bmm", "bf16"),
        ("wcgan", {}, 1, "grouped", "fp32"),
        ("dccgan", {"augment": "diffaugment", "augment_policy": ["color"]}, 2, "grouped", "fp32"),
    ],
)
def test_captured_iteration_equals_eager(model, extra, k, kernel, precision):
    settings = {**TINY_MODEL, **extra}
    eager, eager_diag, eager_nets = run(model, settings, k, kernel, precision, cuda_graph=False)
    graphed, graph_diag, graph_nets = run(model, settings, k, kernel, precision, cuda_graph=True)
    assert eager.graph is None and graphed.graph is not None  # captured, and replayed since
    tolerance = {"rtol": 1e-2, "atol": 1e-3} if precision == "bf16" else {"rtol": 1e-4, "atol": 1e-5}
    torch.testing.assert_close(graph_diag, eager_diag, equal_nan=True, **tolerance)
    for net in ("gen", "critic"):
        want, got = getattr(eager_nets, net).state_dict(), getattr(graph_nets, net).state_dict()
        for key in want:
            name = f"{net}.{key}"
            torch.testing.assert_close(got[key], want[key], **tolerance, msg=lambda m, name=name: f"{name}: {m}")
    # Each member's streams drew exactly as many numbers as eagerly (the replays advance them).
    for (cpu_a, dev_a), (cpu_b, dev_b) in zip(eager.rngs, graphed.rngs):
        assert torch.equal(cpu_a.get_state(), cpu_b.get_state())
        assert torch.equal(dev_a.get_state(), dev_b.get_state())
