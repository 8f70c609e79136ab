"""Packed training: K labels in one batched computation equal K separate `train_label` runs.

Equality is up to floating-point rounding (grouped kernels sum in another order), compared after
10 iterations with rtol=1e-4, atol=1e-5.  Longer comparisons are not meaningful: GAN training
amplifies rounding — the same `train_label` run with 1 and with 2 threads drifts past these
tolerances after ~13-15 iterations, by exactly as much as packed does — so the comparison stops
at 10.
"""

from __future__ import annotations

import json
import logging
import re
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import kill_after_checkpoints

from labelwise.errors import LabelwiseError
from labelwise.images import write_images
from labelwise.nets import Critic, Generator
from labelwise.train import LOG_COLUMNS, Budget, Outputs, load_generator, train_label
from labelwise.train.checkpoint import list_checkpoints
from labelwise.train.loop import build_networks
from labelwise.train.packed import (
    PackedCritic,
    PackedGenerator,
    pack_optimizer_states,
    pack_state_dicts,
    train_packed,
    unpack_optimizer_state,
    unpack_state_dict,
)

LABELS = (2, 5, 7)
COUNTS = (24, 20, 30)  # different image counts: each label samples from its own


@pytest.fixture
def shards(make_shard):
    return [make_shard(label=label, n=n) for label, n in zip(LABELS, COUNTS)]


def outputs_for(root, labels=LABELS):
    return [
        Outputs(generator=root / f"g{k}.pt", log=root / f"log{k}.csv", checkpoints=root / f"ckpt{k}") for k in labels
    ]


def weights(path):
    return load_generator(path)[0].state_dict()


def assert_close_weights(a, b, exact=False):
    assert a.keys() == b.keys()
    for key in a:
        if exact or not a[key].dtype.is_floating_point:
            assert torch.equal(a[key], b[key]), f"tensor {key} differs"
        else:
            torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-5, msg=lambda m: f"{key}: {m}")  # noqa: B023


def separate(shards, model, settings, budget, root, **kw):
    outs = outputs_for(root)
    for shard, out in zip(shards, outs):
        train_label(shard, model, settings, budget, 0, out, threads=1, **kw)
    return outs


# --------------------------------------------------------------------------- networks and conversion


@pytest.mark.parametrize("model", ["wcgan", "dccgan"])
@pytest.mark.parametrize("channels_last", [False, True])
def test_packed_networks_compute_each_labels_network(model, channels_last, tiny_settings):
    nets = [build_networks(model, tiny_settings, 3, 32, 0, label, "cpu") for label in LABELS]
    gens, critics = [g for g, _ in nets], [c for _, c in nets]
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    pg, pc = PackedGenerator.from_networks(gens, fmt), PackedCritic.from_networks(critics, fmt)
    z = torch.randn(5, len(LABELS), tiny_settings["latent_dim"])
    x = torch.randn(5, len(LABELS), 3, 32, 32)
    images, scores = pg(z), pc(x)  # train mode: batch norm uses each label's own batch statistics
    assert images.shape == (5, len(LABELS), 3, 32, 32) and scores.shape == (5, len(LABELS))
    for k, (g, c) in enumerate(nets):
        torch.testing.assert_close(images[:, k], g(z[:, k]), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(scores[:, k], c(x[:, k]), rtol=1e-5, atol=1e-5)
    # Running statistics moved per label too: unpacking gives each network's own state.
    for packed, singles in ((pg, gens), (pc, critics)):
        for sd, net in zip(packed.unpack(), singles):
            assert_close_weights(sd, net.state_dict())


def test_state_dicts_round_trip_exactly(tiny_settings):
    gens = [Generator(8, 1, 32, 4) for _ in range(4)]
    critics = [Critic(1, 32, 4, norm="batch") for _ in range(4)]
    for nets in (gens, critics):
        sds = [n.state_dict() for n in nets]
        back = unpack_state_dict(pack_state_dicts(sds), len(sds))
        for a, b in zip(sds, back):
            assert_close_weights(a, b, exact=True)
            assert all(t.is_contiguous() for t in b.values())


def test_optimizer_states_round_trip_and_match_separate_adams():
    """Adam over packed parameters == K independent Adams (it is elementwise), and states convert."""
    torch.manual_seed(0)
    nets = [Critic(1, 16, 4) for _ in range(3)]
    packed = PackedCritic.from_networks(nets)
    opts = [torch.optim.Adam(n.parameters(), lr=1e-2) for n in nets]
    popt = torch.optim.Adam(packed.parameters(), lr=1e-2)
    x = torch.randn(6, 3, 1, 16, 16)
    for _ in range(3):
        for k, (n, o) in enumerate(zip(nets, opts)):
            o.zero_grad()
            n(x[:, k]).square().mean().backward()
            o.step()
        popt.zero_grad()
        packed(x).square().mean(0).sum().backward()
        popt.step()
    for sd, n in zip(packed.unpack(), nets):
        assert_close_weights(sd, n.state_dict())
    singles = unpack_optimizer_state(popt.state_dict(), 3)
    for mine, theirs in zip(singles, (o.state_dict() for o in opts)):
        assert mine["param_groups"] == theirs["param_groups"]
        for i in theirs["state"]:
            for name, value in theirs["state"][i].items():
                torch.testing.assert_close(mine["state"][i][name], value, rtol=1e-4, atol=1e-6)
    repacked = pack_optimizer_states(singles)
    for i, entry in popt.state_dict()["state"].items():
        for name, value in entry.items():
            assert torch.equal(repacked["state"][i][name], value)


# --------------------------------------------------------------------------- training equivalence


@pytest.mark.parametrize("kernel", ["grouped", "bmm"])
@pytest.mark.parametrize("model", ["wcgan", "dccgan"])
def test_packed_equals_separate_runs(tmp_path, shards, tiny_settings, model, kernel):
    budget = Budget(iterations=10, checkpoint_every=5)
    apart = separate(shards, model, tiny_settings, budget, tmp_path / "separate")
    packed = outputs_for(tmp_path / "packed")
    results = train_packed(shards, model, tiny_settings, budget, 0, packed, threads=1, packed_kernel=kernel)
    assert [r.iterations for r in results] == [10, 10, 10]
    for a, b in zip(apart, packed):
        assert_close_weights(weights(a.generator), weights(b.generator))
        # The logs agree too: same rows and columns, losses equal up to rounding.
        rows_a = [line.split(",") for line in a.log.read_text().splitlines()]
        rows_b = [line.split(",") for line in b.log.read_text().splitlines()]
        assert rows_a[0] == rows_b[0] == list(LOG_COLUMNS)
        assert [r[0] for r in rows_a] == [r[0] for r in rows_b]
        for ra, rb in zip(rows_a[1:], rows_b[1:]):
            for va, vb in zip(ra[2:], rb[2:]):
                assert (va == vb == "") or abs(float(va) - float(vb)) <= 1e-3 * (1 + abs(float(va)))
    # Different labels really trained different networks.
    assert not torch.allclose(
        weights(packed[0].generator)["net.0.weight"], weights(packed[1].generator)["net.0.weight"]
    )


@pytest.mark.parametrize("model", ["wcgan", "dccgan"])
def test_channels_last_packing_equals_each_label_alone(tmp_path, shards, tiny_settings, model):
    """channels_last changes the rounding itself (a plain single-network NHWC loop drifts from the
    NCHW one as far as packed does, by iteration ~10 here), so packing is checked within the layout:
    three labels packed equal each label packed alone; and against separate runs over a few steps."""
    budget = Budget(iterations=10, checkpoint_every=5)
    together = outputs_for(tmp_path / "together")
    train_packed(shards, model, tiny_settings, budget, 0, together, threads=1, channels_last=True)
    for shard, label, out in zip(shards, LABELS, together):
        alone = outputs_for(tmp_path / f"alone{label}", (label,))
        train_packed([shard], model, tiny_settings, budget, 0, alone, threads=1, channels_last=True)
        assert_close_weights(weights(alone[0].generator), weights(out.generator))
    short = Budget(iterations=4, checkpoint_every=5)
    apart = separate(shards, model, tiny_settings, short, tmp_path / "separate")
    packed = outputs_for(tmp_path / "packed")
    train_packed(shards, model, tiny_settings, short, 0, packed, threads=1, channels_last=True)
    for a, b in zip(apart, packed):
        assert_close_weights(weights(a.generator), weights(b.generator))


def test_packed_output_files_have_the_single_label_format(tmp_path, shards, tiny_settings):
    budget = Budget(iterations=4, checkpoint_every=2)
    apart = separate(shards, "wcgan", tiny_settings, budget, tmp_path / "separate")
    packed = outputs_for(tmp_path / "packed")
    train_packed(shards, "wcgan", tiny_settings, budget, 0, packed, threads=1)
    for label, a, b in zip(LABELS, apart, packed):
        pa = torch.load(a.generator, weights_only=True)
        pb = torch.load(b.generator, weights_only=True)
        for p in (pa, pb):
            assert p["training"].pop("seconds") > 0  # wall time: differs run to run
        assert {k: v for k, v in pa.items() if k != "state_dict"} == {k: v for k, v in pb.items() if k != "state_dict"}
        assert pb["label"] == label and pb["training"]["iterations"] == 4 and pb["ema"] is None
        assert {k: (v.shape, v.dtype, v.stride()) for k, v in pa["state_dict"].items()} == {
            k: (v.shape, v.dtype, v.stride()) for k, v in pb["state_dict"].items()
        }
        assert [i for i, _ in list_checkpoints(b.checkpoints)] == [4, 2]
        ca = torch.load(list_checkpoints(a.checkpoints)[0][1], weights_only=True)
        cb = torch.load(list_checkpoints(b.checkpoints)[0][1], weights_only=True)
        assert ca.keys() == cb.keys() and ca["fingerprint"] == cb["fingerprint"]
        assert torch.equal(ca["rng_cpu"], cb["rng_cpu"]) and torch.equal(ca["rng_device"], cb["rng_device"])


# --------------------------------------------------------------------------- resuming


@pytest.mark.parametrize("kernel", ["grouped", "bmm"])
def test_packed_resume_matches_uninterrupted(tmp_path, shards, tiny_settings, kernel):
    run = dict(threads=1, packed_kernel=kernel)
    straight = outputs_for(tmp_path / "straight")
    train_packed(shards, "dccgan", tiny_settings, Budget(iterations=16, checkpoint_every=4), 0, straight, **run)
    staged = outputs_for(tmp_path / "staged")
    train_packed(shards, "dccgan", tiny_settings, Budget(iterations=8, checkpoint_every=4), 0, staged, **run)
    results = train_packed(shards, "dccgan", tiny_settings, Budget(iterations=16, checkpoint_every=4), 0, staged, **run)
    assert [r.resumed_from for r in results] == [8, 8, 8]
    for a, b in zip(straight, staged):
        assert_close_weights(weights(a.generator), weights(b.generator), exact=True)
        assert a.log.read_text().splitlines()[-1].split(",")[2:] == b.log.read_text().splitlines()[-1].split(",")[2:]


def test_kill_during_checkpoint_save_resumes_from_common_iteration(tmp_path, shards, tiny_settings, caplog):
    """A kill between labels' saves leaves them one checkpoint apart: resume all from the older one."""
    caplog.set_level(logging.INFO, logger="labelwise.train")
    straight = outputs_for(tmp_path / "straight")
    train_packed(shards, "wcgan", tiny_settings, Budget(iterations=15, checkpoint_every=5), 0, straight, threads=1)
    run = outputs_for(tmp_path / "run")
    train_packed(shards, "wcgan", tiny_settings, Budget(iterations=10, checkpoint_every=5), 0, run, threads=1)
    for out in run[1:]:  # label 0 saved iteration 10, the kill came before the others did
        dict(list_checkpoints(out.checkpoints))[10].unlink()
    results = train_packed(shards, "wcgan", tiny_settings, Budget(iterations=15, checkpoint_every=5), 0, run, threads=1)
    assert [r.resumed_from for r in results] == [5, 5, 5]
    assert "different iterations" in caplog.text
    for a, b in zip(straight, run):
        assert_close_weights(weights(a.generator), weights(b.generator), exact=True)
        assert [i for i, _ in list_checkpoints(b.checkpoints)] == [15, 10]


def test_packed_and_separate_resume_each_others_checkpoints(tmp_path, shards, tiny_settings):
    budget5, budget10 = Budget(iterations=5, checkpoint_every=5), Budget(iterations=10, checkpoint_every=5)
    reference = separate(shards, "wcgan", tiny_settings, budget10, tmp_path / "reference")
    # separate for 5 iterations, then packed to 10
    mixed = separate(shards, "wcgan", tiny_settings, budget5, tmp_path / "mixed")
    results = train_packed(shards, "wcgan", tiny_settings, budget10, 0, mixed, threads=1)
    assert [r.resumed_from for r in results] == [5, 5, 5]
    # packed for 5 iterations, then separate to 10
    other = outputs_for(tmp_path / "other")
    train_packed(shards, "wcgan", tiny_settings, budget5, 0, other, threads=1)
    for shard, out in zip(shards, other):
        assert train_label(shard, "wcgan", tiny_settings, budget10, 0, out, threads=1).resumed_from == 5
    for ref, a, b in zip(reference, mixed, other):
        assert_close_weights(weights(ref.generator), weights(a.generator))
        assert_close_weights(weights(ref.generator), weights(b.generator))


def test_one_label_without_checkpoint_restarts_the_group(tmp_path, shards, tiny_settings):
    run = outputs_for(tmp_path / "run")
    train_packed(shards[:2], "wcgan", tiny_settings, Budget(iterations=4, checkpoint_every=2), 0, run[:2], threads=1)
    results = train_packed(shards, "wcgan", tiny_settings, Budget(iterations=4, checkpoint_every=2), 0, run, threads=1)
    assert [r.resumed_from for r in results] == [0, 0, 0]
    fresh = outputs_for(tmp_path / "fresh")
    train_packed(shards, "wcgan", tiny_settings, Budget(iterations=4, checkpoint_every=2), 0, fresh, threads=1)
    for a, b in zip(fresh, run):
        assert_close_weights(weights(a.generator), weights(b.generator), exact=True)


_SCRIPT = """
import json, sys
from pathlib import Path
from labelwise.cli import setup_logging
from labelwise.train import Budget, Outputs
from labelwise.train.packed import train_packed
a = json.loads(sys.argv[1])
setup_logging()
root = Path(a["root"])
outs = [Outputs(root / f"g{k}.pt", root / f"log{k}.csv", root / f"ckpt{k}") for k in a["labels"]]
train_packed(a["shards"], "wcgan", a["settings"], Budget(**a["budget"]), 0, outs, device="cpu", threads=1,
             progress_seconds=0.5, packed_kernel=a["kernel"])
"""


def _packed_cmd(shards, root, settings, budget, kernel="grouped"):
    blob = json.dumps(
        {
            "shards": [str(s) for s in shards],
            "root": str(root),
            "labels": LABELS,
            "settings": settings,
            "budget": budget,
            "kernel": kernel,
        }
    )
    return [sys.executable, "-c", _SCRIPT, blob]


@pytest.mark.parametrize("kernel", ["grouped", "bmm"])
def test_sigkill_and_rerun_ends_bit_identical(tmp_path, shards, tiny_settings, kernel):
    """Kill a real packed training process after its second checkpoint, rerun it: same weights as no kill."""
    settings = dict(tiny_settings, width=8)
    budget = {"iterations": 120, "checkpoint_every": 10}
    straight = tmp_path / "straight"
    subprocess.run(_packed_cmd(shards, straight, settings, budget, kernel), check=True, capture_output=True)

    killed = tmp_path / "killed"
    proc = subprocess.Popen(_packed_cmd(shards, killed, settings, budget, kernel), stderr=subprocess.DEVNULL)
    kill_after_checkpoints(proc, killed / f"ckpt{LABELS[-1]}", 2, timeout=120)
    assert 0 < list_checkpoints(killed / f"ckpt{LABELS[0]}")[0][0] < budget["iterations"], "the kill must land mid-run"
    assert not any((killed / f"g{k}.pt").exists() for k in LABELS)

    rerun = subprocess.run(
        _packed_cmd(shards, killed, settings, budget, kernel), capture_output=True, text=True, check=True
    )
    assert "resuming from checkpoint at iteration" in rerun.stderr
    for k in LABELS:
        assert_close_weights(weights(straight / f"g{k}.pt"), weights(killed / f"g{k}.pt"), exact=True)


def test_snapshots_match_separate_runs_and_survive_a_resume(tmp_path, shards, tiny_settings):
    """budget.snapshots: each label's snapshots and bundle as train_label writes them."""
    from labelwise.train.checkpoint import list_snapshots
    from labelwise.train.generator_files import load_snapshots

    budget = Budget(iterations=8, checkpoint_every=4, snapshots=[0.25, 0.5, 1.0])  # at 2, 4, 8

    def with_bundles(outs):
        return [Outputs(o.generator, o.log, o.checkpoints, o.generator.with_suffix(".snap.pt")) for o in outs]

    apart = with_bundles(outputs_for(tmp_path / "separate"))
    for shard, out in zip(shards, apart):
        train_label(shard, "wcgan", tiny_settings, budget, 0, out, threads=1)
    staged = with_bundles(outputs_for(tmp_path / "staged"))
    train_packed(
        shards,
        "wcgan",
        tiny_settings,
        Budget(iterations=4, checkpoint_every=4, snapshots=[0.5, 1.0]),
        0,
        [Outputs(o.generator, o.log, o.checkpoints) for o in staged],
        threads=1,
    )  # snapshots at 2, 4
    results = train_packed(shards, "wcgan", tiny_settings, budget, 0, staged, threads=1)
    assert [r.resumed_from for r in results] == [4, 4, 4]  # 2 and 4 were taken: no restart needed
    for _label, a, b in zip(LABELS, apart, staged):
        assert [i for i, _ in list_snapshots(b.checkpoints)] == [2, 4, 8]
        ea, eb = load_snapshots(a.snapshots), load_snapshots(b.snapshots)
        # (fractions are those of the run that took each snapshot, as with train_label: 0.5 of 4 here)
        assert [(e["iteration"], e["label"], e["fingerprint"]) for e in ea] == [
            (e["iteration"], e["label"], e["fingerprint"]) for e in eb
        ]
        for x, y in zip(ea, eb):
            assert_close_weights(x["state_dict"], y["state_dict"])
        assert_close_weights(eb[-1]["state_dict"], weights(b.generator), exact=True)


def test_a_snapshot_point_already_passed_restarts_the_group(tmp_path, shards, tiny_settings, caplog):
    caplog.set_level(logging.INFO, logger="labelwise.train")
    run = outputs_for(tmp_path / "run")
    train_packed(shards, "wcgan", tiny_settings, Budget(iterations=4, checkpoint_every=4), 0, run, threads=1)
    results = train_packed(
        shards, "wcgan", tiny_settings, Budget(iterations=8, checkpoint_every=4, snapshots=[0.25]), 0, run, threads=1
    )
    assert [r.resumed_from for r in results] == [0, 0, 0] and "never taken" in caplog.text


def test_nonfinite_weights_are_never_saved(tmp_path, shards, tiny_settings, monkeypatch):
    """A step that leaves one label's weights NaN: no checkpoint, snapshot or generator of any label."""
    adam_step = torch.optim.Adam.step

    def poisoned_step(self, *args, **kwargs):
        result = adam_step(self, *args, **kwargs)
        first = self.param_groups[0]["params"][0]
        if first.shape[0] == len(LABELS) * tiny_settings["latent_dim"] and int(self.state[first]["step"]) == 7:
            with torch.no_grad():  # the packed generator's first weight, in label 5's block
                first[tiny_settings["latent_dim"]].view(-1)[0] = float("nan")
        return result

    monkeypatch.setattr(torch.optim.Adam, "step", poisoned_step)
    out = outputs_for(tmp_path)
    budget = Budget(iterations=20, checkpoint_every=5, snapshots=[0.35])  # snapshot point 7
    with pytest.raises(
        LabelwiseError, match=r"non-finite weights at iteration 7 \(label 5: generator\.net\.0\.weight\)"
    ):
        train_packed(shards, "wcgan", tiny_settings, budget, 0, out, threads=1)
    for o in out:
        assert [i for i, _ in list_checkpoints(o.checkpoints)] == [5]
        assert not (o.checkpoints / "snapshots").exists() or not any((o.checkpoints / "snapshots").iterdir())
        assert not o.generator.exists()


# --------------------------------------------------------------------------- errors


def test_budget_in_minutes_stops_every_label_together(tmp_path, shards, tiny_settings):
    out = outputs_for(tmp_path)
    results = train_packed(shards, "wcgan", tiny_settings, Budget(iterations=10**6, minutes=0.02), 0, out, threads=1)
    assert {r.stopped_by for r in results} == {"minutes"} and len({r.iterations for r in results}) == 1
    assert all(o.generator.exists() and o.log.exists() for o in out)


def test_mismatched_arguments_are_clear_errors(tmp_path, make_shard, shards, tiny_settings):
    budget = Budget(iterations=2)
    with pytest.raises(LabelwiseError, match="one Outputs"):
        train_packed(shards, "wcgan", tiny_settings, budget, 0, outputs_for(tmp_path)[:2])
    with pytest.raises(LabelwiseError, match="listed twice"):
        train_packed([shards[0], shards[0]], "wcgan", tiny_settings, budget, 0, outputs_for(tmp_path, (2, 3)))
    with pytest.raises(LabelwiseError, match="holds label 5 but label 4"):
        train_packed(shards, "wcgan", tiny_settings, budget, 0, outputs_for(tmp_path), labels=[2, 4, 7])
    with pytest.raises(LabelwiseError, match="unknown model"):
        train_packed(shards, "gan", tiny_settings, budget, 0, outputs_for(tmp_path))
    with pytest.raises(LabelwiseError, match="per-label models"):
        train_packed(shards, "cgan", tiny_settings, budget, 0, outputs_for(tmp_path))
    other = tmp_path / "rgb.h5"
    write_images(other, np.zeros((4, 3, 28, 28), np.uint8), label=9)
    with pytest.raises(LabelwiseError, match="different shapes"):
        train_packed([shards[0], other], "wcgan", tiny_settings, budget, 0, outputs_for(tmp_path, (2, 9)))


def test_divergence_names_the_label_and_keeps_checkpoints(tmp_path, shards, tiny_settings, monkeypatch):
    from labelwise import losses

    calls = {"n": 0}
    real_loss = losses.wgan_generator_loss

    def exploding(critic, fake):
        calls["n"] += 1
        loss = real_loss(critic, fake)
        if calls["n"] > 6:  # label 5 (the second) diverges; the others are fine
            loss = loss * torch.tensor([1.0, float("nan"), 1.0])
        return loss

    monkeypatch.setattr(losses, "wgan_generator_loss", exploding)
    out = outputs_for(tmp_path)
    with pytest.raises(LabelwiseError, match=r"diverged.*label 5: d_loss=.*g_loss=nan.*last good checkpoints"):
        train_packed(shards, "wcgan", tiny_settings, Budget(iterations=40, checkpoint_every=5), 0, out, threads=1)
    for o in out:
        assert [i for i, _ in list_checkpoints(o.checkpoints)] == [5]
        assert not o.generator.exists()


# --------------------------------------------------------------------------- channels_last in train_label


@pytest.mark.parametrize("model", ["wcgan", "dccgan"])
def test_train_label_channels_last_is_a_layout_not_another_model(tmp_path, make_shard, tiny_settings, model):
    """runtime.channels_last: the same training as NCHW up to rounding, and its own kill/resume is exact."""
    shard = make_shard(label=5, n=20)

    def out(name):
        return Outputs(tmp_path / f"{name}.pt", tmp_path / f"{name}.csv", tmp_path / f"{name}-ckpt")

    short = Budget(iterations=4, checkpoint_every=2)
    train_label(shard, model, tiny_settings, short, 0, out("nchw"), threads=1)
    train_label(shard, model, tiny_settings, short, 0, out("nhwc"), threads=1, channels_last=True)
    assert_close_weights(weights(tmp_path / "nchw.pt"), weights(tmp_path / "nhwc.pt"))
    # Packed training of this one label in channels_last is the same computation.
    alone = [out("packed")]
    train_packed([shard], model, tiny_settings, short, 0, alone, threads=1, channels_last=True)
    assert_close_weights(weights(tmp_path / "nhwc.pt"), weights(alone[0].generator))
    # Staged 3 + 3 iterations end bit-identical to 6 straight, both in channels_last.
    six = Budget(iterations=6, checkpoint_every=3)
    train_label(shard, model, tiny_settings, six, 0, out("straight"), threads=1, channels_last=True)
    train_label(
        shard,
        model,
        tiny_settings,
        Budget(iterations=3, checkpoint_every=3),
        0,
        out("staged"),
        threads=1,
        channels_last=True,
    )
    result = train_label(shard, model, tiny_settings, six, 0, out("staged"), threads=1, channels_last=True)
    assert result.resumed_from == 3
    assert_close_weights(weights(tmp_path / "straight.pt"), weights(tmp_path / "staged.pt"), exact=True)


# --------------------------------------------------------------------------- bf16


def assert_first_losses_close(log_a, log_b, rel: float) -> None:
    """The first log rows' d_loss and g_loss (one row per iteration in these short runs) agree within `rel`."""
    row_a, row_b = (log.read_text().splitlines()[1].split(",") for log in (log_a, log_b))
    assert row_a[0] == row_b[0] == "1"
    for va, vb in zip(row_a[2:4], row_b[2:4]):
        assert abs(float(va) - float(vb)) <= rel * (abs(float(va)) + 0.1), (row_a, row_b)


@pytest.mark.parametrize("model", ["wcgan", "dccgan"])
def test_bf16_trains_on_the_cpu_and_resumes_exactly(tmp_path, shards, tiny_settings, model):
    """runtime.precision bf16: forward passes in bf16 change the numbers (it is really used), weights,
    checkpoints and Adam states stay fp32, the per-label losses are finite, and a staged packed run
    ends bit-identical to a straight one."""
    budget = Budget(iterations=6, checkpoint_every=3)
    fp32 = outputs_for(tmp_path / "fp32")
    train_packed(shards, model, tiny_settings, budget, 0, fp32, threads=1)
    straight = outputs_for(tmp_path / "bf16")
    results = train_packed(
        shards, model, tiny_settings, budget, 0, straight, threads=1, precision="bf16", packed_kernel="bmm"
    )
    assert [r.iterations for r in results] == [6, 6, 6]
    for _label, a, b in zip(LABELS, fp32, straight):
        wa, wb = weights(a.generator), weights(b.generator)
        assert all(v.dtype == torch.float32 for v in wb.values() if v.is_floating_point())
        assert any(not torch.equal(wa[key], wb[key]) for key in wa if wa[key].is_floating_point())
        # bf16 rounding (~3 significant digits), not another computation: the first iteration's losses,
        # taken at the same initial weights and batches, agree with fp32's to bf16's precision.
        assert_first_losses_close(a.log, b.log, rel=0.03)
        rows = [line.split(",") for line in b.log.read_text().splitlines()[1:]]
        assert rows and all(np.isfinite(float(r[2])) and np.isfinite(float(r[3])) for r in rows)
        state = torch.load(list_checkpoints(b.checkpoints)[0][1], weights_only=True)
        for part in ("generator", "critic"):
            assert all(v.dtype == torch.float32 for v in state[part].values() if v.is_floating_point())
        assert all(
            v.dtype == torch.float32
            for entry in state["opt_d"]["state"].values()
            for name, v in entry.items()
            if name != "step"
        )
    staged = outputs_for(tmp_path / "staged")
    train_packed(
        shards,
        model,
        tiny_settings,
        Budget(iterations=3, checkpoint_every=3),
        0,
        staged,
        threads=1,
        precision="bf16",
        packed_kernel="bmm",
    )
    train_packed(shards, model, tiny_settings, budget, 0, staged, threads=1, precision="bf16", packed_kernel="bmm")
    for a, b in zip(straight, staged):
        assert_close_weights(weights(a.generator), weights(b.generator), exact=True)
    # The single-label loop takes the same setting: label 2 alone in bf16 equals it packed, up to rounding.
    alone = outputs_for(tmp_path / "alone", LABELS[:1])
    train_label(
        shards[0],
        model,
        tiny_settings,
        Budget(iterations=2, checkpoint_every=3),
        0,
        alone[0],
        threads=1,
        precision="bf16",
    )
    packed_two = outputs_for(tmp_path / "packed2")
    train_packed(
        shards,
        model,
        tiny_settings,
        Budget(iterations=2, checkpoint_every=3),
        0,
        packed_two,
        threads=1,
        precision="bf16",
    )
    assert_first_losses_close(alone[0].log, packed_two[0].log, rel=0.03)
    assert not torch.equal(weights(alone[0].generator)["net.0.weight"], weights(fp32[0].generator)["net.0.weight"])


def test_unknown_precision_or_kernel_is_one_clear_error(tmp_path, shards, tiny_settings):
    with pytest.raises(LabelwiseError, match="runtime.precision must be one of fp32, bf16, got 'fp16'"):
        train_packed(
            shards, "wcgan", tiny_settings, Budget(iterations=2), 0, outputs_for(tmp_path / "out"), precision="fp16"
        )
    with pytest.raises(LabelwiseError, match="runtime.precision must be one of fp32, bf16, got 'fp16'"):
        train_label(
            shards[0],
            "wcgan",
            tiny_settings,
            Budget(iterations=2),
            0,
            outputs_for(tmp_path / "out")[0],
            precision="fp16",
        )
    with pytest.raises(LabelwiseError, match="runtime.packed_kernel must be one of auto, grouped, bmm, got 'fast'"):
        train_packed(
            shards, "wcgan", tiny_settings, Budget(iterations=2), 0, outputs_for(tmp_path / "out"), packed_kernel="fast"
        )
    assert not (tmp_path / "out").exists()  # refused before anything was written


# --------------------------------------------------------------------------- the command line and the pipeline


def _cli_train(shards, root, settings, labels, extra=(), **paths):
    blob = json.dumps({"model": settings, "budget": {"iterations": 4, "checkpoint_every": 2}, "seed": 0})
    args = {
        "generator": [str(root / f"g{k}.pt") for k in labels],
        "log": [str(root / f"log{k}.csv") for k in labels],
        "checkpoints": [str(root / f"ckpt{k}") for k in labels],
    } | paths
    cmd = [
        sys.executable,
        "-m",
        "labelwise.cli",
        "train",
        "--model",
        "wcgan",
        "--label",
        *map(str, labels),
        "--settings",
        blob,
        "--shard",
        *map(str, shards),
        "--device",
        "cpu",
        "--threads",
        "1",
        *extra,
    ]
    for key, values in args.items():
        cmd += [f"--{key}", *values]
    return subprocess.run(cmd, capture_output=True, text=True)


def test_cli_trains_several_labels_as_one_packed_job(tmp_path, shards, tiny_settings):
    run = _cli_train(shards, tmp_path / "cli", tiny_settings, LABELS, extra=("--packed-kernel", "bmm"))
    assert run.returncode == 0, run.stderr
    assert "packed on device cpu, 1 thread(s), bmm kernel, fp32" in run.stderr
    assert re.search(
        r"done: 4 iterations in [\d.]+ s \(stopped by the iteration cap 4 \(no compute budget\)\); [\d.]+ label-it/s",
        run.stderr,
    )
    apart = separate(shards, "wcgan", tiny_settings, Budget(iterations=4, checkpoint_every=2), tmp_path / "separate")
    for k, a in zip(LABELS, apart):
        assert_close_weights(weights(a.generator), weights(tmp_path / "cli" / f"g{k}.pt"))
    # One path per label, or one clear line naming the option.
    bad = _cli_train(shards, tmp_path / "bad", tiny_settings, LABELS, generator=[str(tmp_path / "only-one.pt")])
    assert bad.returncode == 1
    assert "--generator needs one path per label (3), got 1" in bad.stderr
    assert not (tmp_path / "bad").exists()  # refused before anything was written


@pytest.mark.e2e
def test_pipeline_labels_per_job_packs_labels_and_switching_back_retrains_nothing(tmp_path):
    """runtime.labels_per_job: 2 over labels 0-2 -> jobs for packs (0, 1) and (2); the files per label
    are those of separate jobs (up to rounding); a profile's `train:` settings reach the pack rules;
    back to 1, the jobs find their final checkpoints: the generators come out bit-identical."""
    from conftest import TINY, snakemake

    config = dict(
        TINY,
        data={"source": "mnist5k", "labels": [0, 1, 2]},
        models={"wcgan": TINY["models"]["wcgan"]},
        runtime=dict(TINY["runtime"], labels_per_job=2),
    )
    targets = [f"results/mnist5k/wcgan/samples/{k}.h5" for k in (0, 1, 2)]
    dry = snakemake(
        tmp_path, config, *targets, "-n", "-p", "--set-threads", "train=2", "--set-resources", "train:gpu=1"
    )
    assert dry.returncode == 0, dry.stderr[-2000:]
    assert "rule train_labels_0_1:" in dry.stdout and "rule train_labels_2_2:" in dry.stdout
    assert "rule train:" not in dry.stdout
    assert "--label 0 1 " in dry.stdout and "--threads 2" in dry.stdout and "gpu=1" in dry.stdout

    first = snakemake(tmp_path, config, *targets)
    assert first.returncode == 0, first.stderr[-3000:]
    ds = tmp_path / "results" / "mnist5k" / "wcgan"
    log = (tmp_path / "logs/mnist5k/train/wcgan/labels_0-1.log").read_text()
    assert "[wcgan labels 0,1] packed" in log and "it 6/6" in log
    before = {k: (ds / "generators" / f"{k}.pt").read_bytes() for k in (0, 1, 2)}

    # The same labels trained one job each, from scratch, elsewhere: equal up to rounding.
    single = tmp_path / "single"
    single.mkdir()
    alone = snakemake(single, dict(config, runtime=TINY["runtime"]), *targets[:2])
    assert alone.returncode == 0, alone.stderr[-3000:]
    for k in (0, 1):
        assert_close_weights(
            weights(single / f"results/mnist5k/wcgan/generators/{k}.pt"), weights(ds / f"generators/{k}.pt")
        )

    back = snakemake(tmp_path, dict(config, runtime=TINY["runtime"]), *targets)
    assert back.returncode == 0, back.stderr[-3000:]
    for k in (0, 1, 2):
        assert (ds / "generators" / f"{k}.pt").read_bytes() == before[k]
        assert "resuming from checkpoint at iteration 6" in (tmp_path / f"logs/mnist5k/train/wcgan/{k}.log").read_text()
