"""The batched-GEMM packed convolutions (labelwise.train.packed_layers) and the kernel choice.

Both kernels must compute K independent per-label networks: forward, backward and the gradient
penalty's double backward equal to each label's own `Generator`/`Critic` up to fp32 rounding, with
the same parameters (so checkpoints do not depend on the kernel).
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from labelwise import losses
from labelwise.errors import LabelwiseError
from labelwise.train.networks import PackedCritic, PackedGenerator, build_networks
from labelwise.train.packed_layers import BmmConv2d, BmmConvTranspose2d, kernel_for, packed_conv

LABELS = (2, 5, 7)
KERNELS = ("grouped", "bmm")
TOL = dict(rtol=1e-4, atol=1e-5)


def _nets(model, settings):
    nets = [build_networks(model, settings, 3, 32, 0, label, "cpu") for label in LABELS]
    return [g for g, _ in nets], [c for _, c in nets]


def _grads(params) -> list[torch.Tensor]:
    return [p.grad.detach().clone() for p in params]


def _split(packed_grads, k) -> list[list[torch.Tensor]]:
    """Packed parameter gradients -> per label (every packed tensor is K per-label blocks along dim 0)."""
    return [[g.chunk(k, dim=0)[j] for g in packed_grads] for j in range(k)]


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("model", ["wcgan", "dccgan"])
def test_packed_networks_equal_each_label_forward_backward_and_double_backward(model, kernel, tiny_settings):
    torch.manual_seed(0)
    gens, critics = _nets(model, tiny_settings)
    pg, pc = PackedGenerator.from_networks(gens, kernel=kernel), PackedCritic.from_networks(critics, kernel=kernel)
    k, b = len(LABELS), 4
    z = torch.randn(b, k, tiny_settings["latent_dim"])
    real = torch.rand(b, k, 3, 32, 32) * 2 - 1
    alpha = torch.rand(b, k, 1, 1, 1)

    # Forward and backward of the generator through the critic (the generator step).
    fake = pg(z)
    pg.zero_grad()
    losses.wgan_generator_loss(pc, fake).sum().backward()
    packed_g = _split(_grads(pg.parameters()), k)
    for j, (g, c) in enumerate(zip(gens, critics)):
        single = g(z[:, j])
        torch.testing.assert_close(fake[:, j], single, **TOL)
        g.zero_grad()
        losses.wgan_generator_loss(c, single).backward()
        for mine, theirs in zip(packed_g[j], _grads(g.parameters())):
            torch.testing.assert_close(mine, theirs, **TOL)

    # The critic loss with the gradient penalty: its parameter gradients need the double backward.
    fake = fake.detach()
    pc.zero_grad()
    d_loss, diag = losses.wgan_gp_critic_loss(pc, real, fake, 10.0, None, alpha=alpha)
    d_loss.sum().backward()
    packed_c = _split(_grads(pc.parameters()), k)
    for j, c in enumerate(critics):
        c.zero_grad()
        single_loss, single_diag = losses.wgan_gp_critic_loss(c, real[:, j], fake[:, j], 10.0, None, alpha=alpha[:, j])
        single_loss.backward()
        torch.testing.assert_close(d_loss[j], single_loss, **TOL)
        torch.testing.assert_close(diag["gradient_penalty"][j], single_diag["gradient_penalty"], **TOL)
        for mine, theirs in zip(packed_c[j], _grads(c.parameters())):
            torch.testing.assert_close(mine, theirs, **TOL)
        assert any(t.abs().max() > 0 for t in packed_c[j])  # a real gradient, not zeros on both sides


@pytest.mark.parametrize(
    "transposed,stride,padding,output_padding",
    [(t, 1, 0, 0) for t in (False, True)]
    + [(t, 2, 1, 0) for t in (False, True)]
    + [(False, 3, 2, 0), (True, 3, 2, 0), (True, 2, 1, 1)],
)  # output_padding: transposed only
def test_bmm_layers_equal_grouped_convolutions_and_pass_gradgradcheck(transposed, stride, padding, output_padding):
    """Against torch's grouped kernels on random weights (both carry the same parameters), and
    torch.autograd's numerical first and second derivative checks in float64."""
    torch.manual_seed(1)
    k, cin, cout = 3, 2, 4
    single = (
        nn.ConvTranspose2d(cin, cout, 4, stride, padding, output_padding=output_padding)
        if transposed
        else nn.Conv2d(cin, cout, 4, stride, padding)
    )
    grouped, bmm = packed_conv(single, k, "grouped"), packed_conv(single, k, "bmm")
    assert isinstance(bmm, BmmConvTranspose2d if transposed else BmmConv2d)
    assert {n: p.shape for n, p in grouped.named_parameters()} == {n: p.shape for n, p in bmm.named_parameters()}
    bmm.load_state_dict(grouped.state_dict())
    x = torch.randn(2, k * cin, 5, 6)
    torch.testing.assert_close(bmm(x), grouped(x), **TOL)
    small = packed_conv(single, k, "bmm").double()  # a few inputs: numerical derivatives are costly
    small.load_state_dict(bmm.state_dict())
    xd = torch.randn(1, k * cin, 4, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(small, (xd,), fast_mode=True)
    assert torch.autograd.gradgradcheck(small, (xd,), fast_mode=True)


def test_state_dicts_do_not_depend_on_the_kernel(tiny_settings):
    gens, critics = _nets("dccgan", tiny_settings)
    for cls, nets in ((PackedGenerator, gens), (PackedCritic, critics)):
        grouped, bmm = cls.from_networks(nets, kernel="grouped"), cls.from_networks(nets, kernel="bmm")
        a, b = grouped.state_dict(), bmm.state_dict()
        assert list(a) == list(b)
        for key in a:
            assert torch.equal(a[key], b[key]), key


def test_kernel_and_graph_choice_per_device_and_job_kind():
    """`auto` keeps one-label and conditional jobs on what has run (grouped, eager); K > 1 labels on
    CUDA get bmm and a CUDA graph; nothing is captured on the CPU."""
    from labelwise.train.loop import resolve_runtime

    cpu, cuda = torch.device("cpu"), torch.device("cuda", 0)
    assert resolve_runtime(1, False, cuda, "auto", "auto") == ("grouped", False)
    assert resolve_runtime(40, False, cuda, "auto", "auto") == ("bmm", True)
    assert resolve_runtime(1, True, cuda, "auto", "auto") == (None, False)
    assert resolve_runtime(1, True, cuda, "auto", "on") == (None, True)
    assert resolve_runtime(40, False, cuda, "grouped", "off") == ("grouped", False)
    assert resolve_runtime(1, False, cuda, "bmm", "auto") == ("bmm", False)
    assert resolve_runtime(40, False, cpu, "auto", "on") == ("grouped", False)
    with pytest.raises(LabelwiseError, match="runtime.cuda_graph must be one of auto, on, off"):
        resolve_runtime(1, False, cpu, "auto", "maybe")
    assert kernel_for("auto", "cpu") == "grouped"
    assert kernel_for("auto", torch.device("cuda", 0)) == "bmm"
    assert kernel_for("bmm", "cpu") == "bmm" and kernel_for("grouped", "cuda") == "grouped"
    with pytest.raises(LabelwiseError, match="packed_kernel must be one of auto, grouped, bmm"):
        kernel_for("fast", "cpu")


# --------------------------------------------------------------------------- the iteration (labelwise.train.engine)


def _iteration(tiny_settings, cuda_graph: bool, k: int = 2, model: str = "wcgan"):
    from labelwise.losses import loss_for
    from labelwise.train.engine import TrainingIteration, label_generators
    from labelwise.train.networks import job_networks

    conditional = model == "cgan"
    nets = job_networks(model, tiny_settings, 3, 32, 0, [9] if conditional else list(LABELS[:k]), "cpu", num_classes=k)
    opt_g, opt_d = torch.optim.Adam(nets.gen.parameters()), torch.optim.Adam(nets.critic.parameters())
    counts = [5, 7][:k]
    pool = torch.rand(sum(counts), 3, 32, 32) * 2 - 1
    rngs = [label_generators(0, label, "cpu") for label in ([9] if conditional else LABELS[:k])]
    return TrainingIteration(
        nets,
        opt_g,
        opt_d,
        loss_for("wgan-gp", tiny_settings),
        pool,
        [sum(counts)] if conditional else counts,
        rngs,
        batch_size=4,
        latent_dim=tiny_settings["latent_dim"],
        critic_steps=3,
        classes=torch.repeat_interleave(torch.arange(k), torch.tensor(counts)) if conditional else None,
        cuda_graph=cuda_graph,
    )


@pytest.mark.parametrize("model", ["wcgan", "cgan"])
def test_indices_drawn_at_once_are_each_members_stream_step_by_step(tiny_settings, model):
    """All of an iteration's batch indices drawn up front are what one draw per critic step gives (the
    conditional model draws one more batch of indices: the generator step's classes)."""
    from labelwise.train.engine import label_generators

    step = _iteration(tiny_settings, cuda_graph=False, model=model)
    idx = step.draw_indices()
    members = [(9, 12)] if model == "cgan" else list(zip(LABELS[:2], (5, 7)))
    assert idx.shape == (4 if model == "cgan" else 3, len(members), 4)
    for j, (label, n) in enumerate(members):
        rng = label_generators(0, label, "cpu")[0]
        for s in range(idx.shape[0]):
            assert torch.equal(idx[s, j], torch.randint(n, (4,), generator=rng))


def test_cuda_graph_setting_is_never_used_on_the_cpu(tiny_settings, caplog):
    """cuda_graph=True on the CPU: plain eager iterations, the same numbers as without it, no capture."""
    from labelwise.train.engine import graph_unsupported

    eager, graphed = _iteration(tiny_settings, cuda_graph=False), _iteration(tiny_settings, cuda_graph=True)
    for _ in range(4):  # past the 3 eager iterations a CUDA device would capture after
        torch.testing.assert_close(graphed(), eager(), rtol=0, atol=0, equal_nan=True)
    assert graphed.graph is None and not graphed.graph_wanted and "CUDA graph" not in caplog.text
    # A capture needs Adam with capturable=True; without it the reason is stated.
    assert graph_unsupported(graphed.opt_g) == "the optimizers were not built with capturable=True"
