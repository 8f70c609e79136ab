"""Issue 13's training additions: DiffAugment, the generator weight average (EMA), two learning
rates and the counted-FLOP budget — what they compute, and that packed training and resuming
keep their guarantees with them on."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from conftest import kill_after_checkpoints

from labelwise.errors import LabelwiseError
from labelwise.train import Budget, Outputs, load_generator, train_label
from labelwise.train import augment as A
from labelwise.train.checkpoint import list_checkpoints
from labelwise.train.compute import label_iteration_flops, resolve
from labelwise.train.ema import GeneratorEMA, decay_at
from labelwise.train.loop import learning_rates
from labelwise.train.packed import train_packed

LABELS = (2, 5, 7)
COUNTS = (24, 20, 30)
POLICY = ("color", "translation", "cutout")


@pytest.fixture
def shards(make_shard):
    return [make_shard(label=label, n=n) for label, n in zip(LABELS, COUNTS)]


def outputs_for(root):
    return [
        Outputs(generator=root / f"g{k}.pt", log=root / f"log{k}.csv", checkpoints=root / f"ckpt{k}") for k in LABELS
    ]


def weights(path):
    return load_generator(path)[0].state_dict()


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


@pytest.mark.parametrize("model", ["wcgan", "dccgan"])
def test_packed_equals_separate_with_augment_and_ema(tmp_path, shards, tiny_settings, model):
    settings = dict(tiny_settings, augment="diffaugment", ema=0.9, lr_g=2e-4, lr_d=1e-4)
    budget = Budget(iterations=10, checkpoint_every=5)
    apart = outputs_for(tmp_path / "separate")
    for shard, out in zip(shards, apart):
        train_label(shard, model, settings, budget, 0, out, threads=1)
    packed = outputs_for(tmp_path / "packed")
    train_packed(shards, model, settings, budget, 0, packed, threads=1)
    plain = outputs_for(tmp_path / "plain")
    train_label(shards[0], model, tiny_settings, budget, 0, plain[0], threads=1)
    for a, b in zip(apart, packed):
        wa, wb = weights(a.generator), weights(b.generator)
        for key in wa:
            torch.testing.assert_close(wa[key].double(), wb[key].double(), rtol=1e-4, atol=1e-5)
    # The generator file holds the average and says so; augmentation changed the trajectory.
    payload = torch.load(apart[0].generator, weights_only=True)
    assert payload["ema"] == 0.9 and payload["training"]["iterations"] == 10
    ckpt = torch.load(list_checkpoints(apart[0].checkpoints)[0][1], weights_only=True)
    for key, value in ckpt["generator_ema"].items():
        assert torch.equal(value, payload["state_dict"][key])
    assert not torch.equal(ckpt["generator"]["net.0.weight"], payload["state_dict"]["net.0.weight"])
    assert not torch.allclose(weights(plain[0].generator)["net.0.weight"], weights(apart[0].generator)["net.0.weight"])


_SCRIPT = """
import json, sys
from pathlib import Path
from labelwise.cli import setup_logging
from labelwise.train import Budget, Outputs, train_label
a = json.loads(sys.argv[1])
setup_logging()
out = Outputs(Path(a["root"]) / "g.pt", Path(a["root"]) / "log.csv", Path(a["root"]) / "ckpt")
train_label(a["shard"], a["model"], a["settings"], Budget(**a["budget"]), 0, out, device="cpu", threads=1)
"""


@pytest.mark.parametrize("model", ["wcgan", "dccgan"])
def test_ema_and_augment_survive_a_kill_bit_identically(tmp_path, shards, tiny_settings, model):
    """SIGKILL a real training process after its second checkpoint, rerun: the same weights, average
    included, as a run that never stopped."""
    settings = dict(tiny_settings, width=8, augment="diffaugment", ema=0.95)

    def cmd(root):
        return [
            sys.executable,
            "-c",
            _SCRIPT,
            json.dumps(
                {
                    "shard": str(shards[0]),
                    "root": str(root),
                    "model": model,
                    "settings": settings,
                    "budget": {"iterations": 150, "checkpoint_every": 10},
                }
            ),
        ]

    subprocess.run(cmd(tmp_path / "straight"), check=True, capture_output=True)
    proc = subprocess.Popen(cmd(tmp_path / "killed"), stderr=subprocess.DEVNULL)
    kill_after_checkpoints(proc, tmp_path / "killed" / "ckpt", 2, timeout=120)
    assert 0 < list_checkpoints(tmp_path / "killed" / "ckpt")[0][0] < 150, "the kill must land mid-run"
    rerun = subprocess.run(cmd(tmp_path / "killed"), capture_output=True, text=True, check=True)
    assert "resuming from checkpoint at iteration" in rerun.stderr
    a = torch.load(tmp_path / "straight" / "g.pt", weights_only=True)
    b = torch.load(tmp_path / "killed" / "g.pt", weights_only=True)
    assert a["ema"] == b["ema"] == 0.95
    for key in a["state_dict"]:
        assert torch.equal(a["state_dict"][key], b["state_dict"][key]), key


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


def test_flop_count_of_the_papers_cifar_networks():
    """The counts benchmark case engine measured for presets/cifar10.yaml's networks (issue 11)."""
    wgan = dict(width=64, latent_dim=100, batch_size=64, critic_steps=5)
    dcgan = dict(width=64, latent_dim=100, batch_size=100, critic_steps=1)
    assert round(label_iteration_flops("wcgan", wgan, 3, 32) / 1e9, 1) == 156.8
    assert round(label_iteration_flops("dccgan", dcgan, 3, 32) / 1e9, 1) == 42.1
