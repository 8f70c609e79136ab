"""Packed training: K labels in one batched computation equal K separate one-label jobs.

Equality is up to floating-point rounding (grouped kernels sum in another order), compared after
10 iterations with rtol=1e-4, atol=1e-5.  Longer comparisons are not meaningful: GAN training
amplifies rounding — the same one-label run with 1 and with 2 threads drifts past these
tolerances after ~13-15 iterations, by exactly as much as packed does — so the comparison stops
at 10.
"""

from __future__ import annotations

import re
import subprocess

import numpy as np
import pytest
import torch
from conftest import (
    PACKED_LABELS,
    TINY,
    Job,
    assert_close_state,
    assert_same_state,
    log_rows,
    snakemake,
    weights,
)

from labelwise.nets import Critic, Generator
from labelwise.train import LOG_COLUMNS, Budget
from labelwise.train.checkpoint import list_checkpoints
from labelwise.train.networks import (
    PackedCritic,
    PackedGenerator,
    build_networks,
    pack_optimizer_states,
    pack_state_dicts,
    unpack_optimizer_state,
    unpack_state_dict,
)

LABELS = PACKED_LABELS


def separate(j, settings, budget, root, **runtime):
    """Each of a packed job's labels trained in a job of its own, into the packed job's file names."""
    for shard, label in zip(j.shards, j.labels):
        Job("one-label", [shard], [label], j.model).train(root, budget, settings, **runtime)
    return j.outputs(root)


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
            assert_close_state(sd, net.state_dict())


def test_state_dicts_round_trip_exactly(tiny_settings):
    gens = [Generator(8, 1, 32, 4) for _ in range(4)]
    critics = [Critic(1, 32, 4, norm="batch") for _ in range(4)]
    for nets in (gens, critics):
        sds = [n.state_dict() for n in nets]
        back = unpack_state_dict(pack_state_dicts(sds), len(sds))
        for a, b in zip(sds, back):
            assert_same_state(a, b)
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
        assert_close_state(sd, n.state_dict())
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

VARIANTS = {
    "plain": ({}, {}),
    "bmm": ({}, {"packed_kernel": "bmm"}),
    "augment-ema-lrs": ({"augment": "diffaugment", "ema": 0.9, "lr_g": 2e-4, "lr_d": 1e-4}, {}),
}


def assert_logs_close(a, b) -> None:
    """Same rows and columns, losses equal up to rounding."""
    rows_a, rows_b = log_rows(a), log_rows(b)
    assert rows_a[0] == rows_b[0] == [c for c in LOG_COLUMNS if c != "wall_seconds"]
    assert [r[0] for r in rows_a] == [r[0] for r in rows_b]
    for ra, rb in zip(rows_a[1:], rows_b[1:]):
        for va, vb in zip(ra[1:], rb[1:]):
            assert (va == vb == "") or abs(float(va) - float(vb)) <= 1e-3 * (1 + abs(float(va)))


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("model", ["wcgan", "dccgan"])
def test_packed_equals_separate_runs(tmp_path, job, tiny_settings, model, variant):
    """Three labels packed end where their own jobs end, up to rounding: weights (the generator average
    with EMA on) and logs, with either kernel and with DiffAugment, EMA and two learning rates."""
    extra, runtime = VARIANTS[variant]
    settings = dict(tiny_settings, **extra)
    budget = Budget(iterations=10, checkpoint_every=5)
    j = job("packed", model)
    apart = separate(j, settings, budget, tmp_path / "separate")
    results = j.train(tmp_path / "packed", budget, settings, **runtime)
    assert [r.iterations for r in results] == [10, 10, 10]
    for a, b in zip(apart, j.outputs(tmp_path / "packed")):
        assert_close_state(weights(a.generator), weights(b.generator))
        assert_logs_close(a.log, b.log)
    packed = j.outputs(tmp_path / "packed")
    # Different labels really trained different networks.
    assert not torch.allclose(
        weights(packed[0].generator)["net.0.weight"], weights(packed[1].generator)["net.0.weight"]
    )
    if "ema" in extra:  # the generator file holds the average and says so; the checkpoint holds both
        payload = torch.load(packed[0].generator, weights_only=True)
        assert payload["ema"] == 0.9
        ckpt = torch.load(list_checkpoints(packed[0].checkpoints)[0][1], weights_only=True)
        assert_same_state(ckpt["generator_ema"], payload["state_dict"])
        assert not torch.equal(ckpt["generator"]["net.0.weight"], payload["state_dict"]["net.0.weight"])


@pytest.mark.parametrize("model", ["wcgan", "dccgan"])
def test_channels_last_is_a_layout_not_another_model(tmp_path, job, tiny_settings, model):
    """runtime.channels_last changes the rounding itself (a one-label NHWC run drifts from the NCHW one as
    far as packed does, by iteration ~10 here), so it is checked within a few iterations: NHWC equals
    NCHW for one label and packed, with either kernel (the bmm layers keep their weights' layout), and
    three labels packed in NHWC equal each label alone in NHWC."""
    short = Budget(iterations=4, checkpoint_every=2)
    j = job("packed", model)
    nchw = separate(j, tiny_settings, short, tmp_path / "nchw")
    for name, runtime in {"nhwc": {}, "nhwc-bmm": {"packed_kernel": "bmm"}}.items():
        j.train(tmp_path / name, short, tiny_settings, channels_last=True, **runtime)
        for a, b in zip(nchw, j.outputs(tmp_path / name)):
            assert_close_state(weights(a.generator), weights(b.generator))
    alone = separate(j, tiny_settings, short, tmp_path / "alone", channels_last=True)
    for a, b in zip(alone, j.outputs(tmp_path / "nhwc")):
        assert_close_state(weights(a.generator), weights(b.generator))


def test_packed_and_separate_resume_each_others_checkpoints(tmp_path, job, tiny_settings):
    budget5, budget10 = Budget(iterations=5, checkpoint_every=5), Budget(iterations=10, checkpoint_every=5)
    j = job("packed")
    reference = separate(j, tiny_settings, budget10, tmp_path / "reference")
    separate(j, tiny_settings, budget5, tmp_path / "mixed")  # separate for 5 iterations, then packed to 10
    assert [r.resumed_from for r in j.train(tmp_path / "mixed", budget10, tiny_settings)] == [5, 5, 5]
    j.train(tmp_path / "other", budget5, tiny_settings)  # packed for 5 iterations, then separate to 10
    for shard, label in zip(j.shards, j.labels):
        (result,) = Job("one-label", [shard], [label], j.model).train(tmp_path / "other", budget10, tiny_settings)
        assert result.resumed_from == 5
    for ref, a, b in zip(reference, j.outputs(tmp_path / "mixed"), j.outputs(tmp_path / "other")):
        assert_close_state(weights(ref.generator), weights(a.generator))
        assert_close_state(weights(ref.generator), weights(b.generator))


# --------------------------------------------------------------------------- bf16


def assert_first_losses_close(log_a, log_b, rel: float) -> None:
    """The first log rows' d_loss and g_loss (one row per iteration in these short runs) agree within `rel`."""
    row_a, row_b = (log_rows(log)[1] for log in (log_a, log_b))
    assert row_a[0] == row_b[0] == "1"
    for va, vb in zip(row_a[1:3], row_b[1:3]):
        assert abs(float(va) - float(vb)) <= rel * (abs(float(va)) + 0.1), (row_a, row_b)


@pytest.mark.parametrize("model", ["wcgan", "dccgan"])
def test_bf16_changes_only_the_forward_precision_and_resumes_exactly(tmp_path, job, tiny_settings, model):
    """runtime.precision bf16: forward passes in bf16 change the numbers (it is really used), weights,
    checkpoints and Adam states stay fp32, the first losses agree with fp32's to bf16's precision, one
    label alone equals it packed to that precision, and a staged run ends bit-identical to a straight one."""
    budget = Budget(iterations=6, checkpoint_every=3)
    j = job("packed", model)
    bf16 = dict(precision="bf16", packed_kernel="bmm")
    j.train(tmp_path / "fp32", budget, tiny_settings)
    j.train(tmp_path / "bf16", budget, tiny_settings, **bf16)
    for a, b in zip(j.outputs(tmp_path / "fp32"), j.outputs(tmp_path / "bf16")):
        wa, wb = weights(a.generator), weights(b.generator)
        assert all(v.dtype == torch.float32 for v in wb.values() if v.is_floating_point())
        assert any(not torch.equal(wa[key], wb[key]) for key in wa if wa[key].is_floating_point())
        assert_first_losses_close(a.log, b.log, rel=0.03)
        rows = log_rows(b.log)[1:]
        assert rows and all(np.isfinite(float(r[1])) and np.isfinite(float(r[2])) for r in rows)
        state = torch.load(list_checkpoints(b.checkpoints)[0][1], weights_only=True)
        for part in ("generator", "critic"):
            assert all(v.dtype == torch.float32 for v in state[part].values() if v.is_floating_point())
        assert all(
            v.dtype == torch.float32
            for entry in state["opt_d"]["state"].values()
            for n, v in entry.items()
            if n != "step"
        )
    j.train(tmp_path / "staged", Budget(iterations=3, checkpoint_every=3), tiny_settings, **bf16)
    j.train(tmp_path / "staged", budget, tiny_settings, **bf16)
    for a, b in zip(j.outputs(tmp_path / "bf16"), j.outputs(tmp_path / "staged")):
        assert_same_state(weights(a.generator), weights(b.generator))
    (alone,) = Job("one-label", j.shards[:1], j.labels[:1], model).train(
        tmp_path / "alone", Budget(iterations=2, checkpoint_every=3), tiny_settings, precision="bf16"
    )
    j.train(tmp_path / "two", Budget(iterations=2, checkpoint_every=3), tiny_settings, precision="bf16")
    first = j.outputs(tmp_path / "alone")[0]
    assert_first_losses_close(first.log, j.outputs(tmp_path / "two")[0].log, rel=0.03)


# --------------------------------------------------------------------------- the command line and the pipeline


def test_cli_trains_several_labels_as_one_packed_job(tmp_path, job, tiny_settings):
    j = job("packed")
    budget = {"iterations": 4, "checkpoint_every": 2}
    run = subprocess.run(
        j.command(tmp_path / "cli", tiny_settings, budget, "--packed-kernel", "bmm"), capture_output=True, text=True
    )
    assert run.returncode == 0, run.stderr
    assert re.search(
        r"\[wcgan labels 2,5,7\] device cpu, 1 thread\(s\), .*\(3 label\(s\), fp32, bmm kernel\)", run.stderr
    )
    assert re.search(
        r"done: 4 iterations in [\d.]+ s \(stopped by the iteration cap 4 \(no compute budget\)\); [\d.]+ label-it/s",
        run.stderr,
    )
    apart = separate(j, tiny_settings, Budget(**budget), tmp_path / "separate")
    for a, b in zip(apart, j.outputs(tmp_path / "cli")):
        assert_close_state(weights(a.generator), weights(b.generator))
    # One path per label, or one clear line naming the option.
    cmd = j.command(tmp_path / "bad", tiny_settings, budget)
    at = cmd.index("--generator")
    bad = subprocess.run(
        [*cmd[: at + 1], str(tmp_path / "only-one.pt"), *cmd[at + 4 :]], capture_output=True, text=True
    )
    assert bad.returncode == 1
    assert "--generator needs one path per label (3), got 1" in bad.stderr
    assert not (tmp_path / "bad").exists()  # refused before anything was written


@pytest.mark.e2e
def test_pipeline_labels_per_job_packs_labels_and_switching_back_retrains_nothing(tmp_path):
    """runtime.labels_per_job: 2 over labels 0-2 -> jobs for packs (0, 1) and (2); the files per label
    are those of separate jobs (up to rounding); a profile's `train:` settings reach the pack rules;
    back to 1, the jobs find their final checkpoints: the generators come out bit-identical."""
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
    assert "[wcgan labels 0,1] device cpu" in log and "2 label(s)" in log and "it 6/6" in log
    before = {k: (ds / "generators" / f"{k}.pt").read_bytes() for k in (0, 1, 2)}

    # The same labels trained one job each, from scratch, elsewhere: equal up to rounding.
    single = tmp_path / "single"
    single.mkdir()
    alone = snakemake(single, dict(config, runtime=TINY["runtime"]), *targets[:2])
    assert alone.returncode == 0, alone.stderr[-3000:]
    for k in (0, 1):
        assert_close_state(
            weights(single / f"results/mnist5k/wcgan/generators/{k}.pt"), weights(ds / f"generators/{k}.pt")
        )

    back = snakemake(tmp_path, dict(config, runtime=TINY["runtime"]), *targets)
    assert back.returncode == 0, back.stderr[-3000:]
    for k in (0, 1, 2):
        assert (ds / "generators" / f"{k}.pt").read_bytes() == before[k]
        assert "resuming from checkpoint at iteration 6" in (tmp_path / f"logs/mnist5k/train/wcgan/{k}.log").read_text()
