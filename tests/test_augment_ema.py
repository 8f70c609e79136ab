"""Issue 13's training additions: DiffAugment, the generator weight average (EMA), two learning
rates and the counted-FLOP budget — what they compute.  That packed training and resuming keep
their guarantees with them on: tests/test_packing.py (packed = separate) and tests/test_train.py
(a kill and a rerun)."""

from __future__ import annotations

import pytest
import torch

from labelwise.errors import LabelwiseError
from labelwise.train import Budget
from labelwise.train import augment as A
from labelwise.train.compute import label_iteration_flops, resolve
from labelwise.train.ema import GeneratorEMA, decay_at
from labelwise.train.loop import learning_rates

POLICY = ("color", "translation", "cutout")


# --------------------------------------------------------------------------- DiffAugment


def test_augmentation_is_one_function_of_the_draws_on_real_and_fake():
    real, fake = torch.randn(6, 3, 16, 16), torch.randn(6, 3, 16, 16)
    outs = []
    for x in (real, fake):
        rng = torch.Generator().manual_seed(7)
        outs.append(A.augmenter(POLICY, [rng])(x))
    p = A.draw(POLICY, 6, (16, 16), torch.Generator().manual_seed(7), "cpu")
    assert torch.equal(outs[0], A.apply(real, p)) and torch.equal(outs[1], A.apply(fake, p))
    # The same draws move and cut the same pixels: where the transform zeroes real, it zeroes fake.
    only_geometry = {k: v for k, v in p.items() if not k.startswith(("brightness", "saturation", "contrast"))}
    ones = A.apply(torch.ones(6, 3, 16, 16), only_geometry)
    assert torch.equal(A.apply(real, only_geometry) == 0, (ones == 0) | (A.apply(real, only_geometry) == 0))
    assert torch.equal(A.apply(real, only_geometry) * 0 + (ones == 0), A.apply(fake, only_geometry) * 0 + (ones == 0))


def test_augmentation_operations_do_what_they_say():
    x = torch.arange(2 * 1 * 8 * 8, dtype=torch.float64).view(2, 1, 8, 8)
    shifted = A.apply(x, {"shift_y": torch.tensor([1, 0]), "shift_x": torch.tensor([0, -1])})
    assert torch.equal(shifted[0, 0, 1:], x[0, 0, :-1]) and torch.equal(shifted[0, 0, 0], torch.zeros(8, dtype=x.dtype))
    assert torch.equal(shifted[1, 0, :, :-1], x[1, 0, :, 1:])
    assert torch.equal(shifted[1, 0, :, -1], torch.zeros(8, dtype=x.dtype))
    cut = A.apply(x + 1, {"cut_y": torch.tensor([4, 0]), "cut_x": torch.tensor([4, 0])})
    assert (cut[0] == 0).sum() == 16 and torch.equal(cut[0, 0, 2:6, 2:6], torch.zeros(4, 4, dtype=x.dtype))
    assert (cut[1] == 0).sum() == 4  # clipped at the corner: rows/cols 0..1
    colour = A.apply(
        torch.zeros(1, 1, 2, 2),
        {"brightness": torch.tensor([0.25]), "saturation": torch.tensor([2.0]), "contrast": torch.tensor([1.0])},
    )
    assert torch.allclose(colour, torch.full((1, 1, 2, 2), 0.25))


def test_augmentation_keeps_shapes_and_gradients():
    x = torch.randn(3, 2, 8, 8, dtype=torch.float64, requires_grad=True)
    p = A.draw(POLICY, 3, (8, 8), torch.Generator().manual_seed(1), "cpu")
    assert A.apply(x, p).shape == x.shape
    assert torch.autograd.gradcheck(lambda t: A.apply(t, p), (x,))
    assert torch.autograd.gradgradcheck(lambda t: A.apply(t, p), (x,))  # the gradient penalty differentiates twice
    packed = torch.randn(4, 3, 2, 8, 8)
    assert A.augmenter(POLICY, [torch.Generator().manual_seed(s) for s in range(3)])(packed).shape == packed.shape


def test_packed_augmentation_draws_each_labels_own_stream():
    x = torch.randn(4, 3, 1, 8, 8)
    packed = A.augmenter(POLICY, [torch.Generator().manual_seed(s) for s in range(3)])(x)
    for k in range(3):
        alone = A.augmenter(POLICY, [torch.Generator().manual_seed(k)])(x[:, k])
        assert torch.equal(packed[:, k], alone)


def test_augment_settings_are_checked():
    assert A.policy_of({"augment": "none"}) == ()
    assert A.policy_of({"augment": "diffaugment", "augment_policy": ["cutout", "color"]}) == ("color", "cutout")
    with pytest.raises(LabelwiseError, match="augment must be one of"):
        A.policy_of({"augment": "ada"})
    with pytest.raises(LabelwiseError, match="unknown operation"):
        A.policy_of({"augment": "diffaugment", "augment_policy": ["flip"]})


# --------------------------------------------------------------------------- EMA


def test_ema_follows_the_decay_formula():
    net = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))
    ema = GeneratorEMA(net, 0.9)
    expected = {k: v.clone() for k, v in net.state_dict().items()}
    for t in range(1, 40):
        with torch.no_grad():
            for p in net.parameters():
                p.add_(torch.randn_like(p))
        net(torch.randn(5, 3))  # moves the batch-norm statistics too
        ema.update(net, t)
        beta = min(0.9, (1 + t) / (10 + t))
        for k, v in net.state_dict().items():
            expected[k] = beta * expected[k] + (1 - beta) * v if v.is_floating_point() else v.clone()
    for k, v in expected.items():
        torch.testing.assert_close(ema.state_dict()[k], v)
    assert decay_at(0.999, 1) == pytest.approx(2 / 11) and decay_at(0.999, 10**6) == 0.999


# --------------------------------------------------------------------------- learning rates, compute budget


def test_learning_rates():
    assert learning_rates({"lr": 1e-4}) == (1e-4, 1e-4)
    assert learning_rates({"lr": 1e-4, "lr_g": 3e-4, "lr_d": None}) == (3e-4, 1e-4)


def test_flop_budget_fixes_the_iterations(tiny_settings):
    wgan = label_iteration_flops("wcgan", dict(tiny_settings, critic_steps=5), 1, 32)
    dcgan = label_iteration_flops("dccgan", dict(tiny_settings, critic_steps=1), 1, 32)
    assert wgan > 3 * dcgan  # five critic steps with a double backward against one
    budget = Budget(iterations=10**6, gflop=10 * wgan / 1e9)
    assert resolve(budget, wgan).iterations == 10 and resolve(budget, dcgan).iterations == (10 * wgan) // dcgan
    assert resolve(Budget(iterations=3, gflop=10 * wgan / 1e9), wgan).iterations == 3  # iterations still cap it
    assert resolve(Budget(iterations=3), wgan).iterations == 3


@pytest.mark.parametrize("conditional, per_label", [("cgan", "wcgan"), ("cdcgan", "dccgan")])
def test_flop_count_of_a_conditional_model_is_its_per_label_counterparts(tiny_settings, conditional, per_label):
    """One conditional network over ten classes counts what one per-label network of the same loss
    and layers counts, up to its projection head (a linear layer where the critic has its last
    convolution; the class embeddings are lookups): within a per cent."""
    settings = dict(tiny_settings, width=16, batch_size=64)
    ratio = label_iteration_flops(conditional, settings, 1, 32, 10) / label_iteration_flops(per_label, settings, 1, 32)
    assert abs(ratio - 1) < 0.01


def test_flop_count_of_the_papers_cifar_networks():
    """The counts benchmark case engine measured for presets/cifar10.yaml's networks (issue 11)."""
    wgan = dict(width=64, latent_dim=100, batch_size=64, critic_steps=5)
    dcgan = dict(width=64, latent_dim=100, batch_size=100, critic_steps=1)
    assert round(label_iteration_flops("wcgan", wgan, 3, 32) / 1e9, 1) == 156.8
    assert round(label_iteration_flops("dccgan", dcgan, 3, 32) / 1e9, 1) == 42.1
