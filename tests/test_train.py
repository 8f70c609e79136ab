"""The training engine (labelwise.train.loop.train_job): what a job writes, exact resume after a stop,
a kill or a longer budget, stale and corrupt checkpoints, divergence, budgets, signals, the log lines.

Every behaviour is tested once for every kind of job (conftest.JOB_KINDS): one label of a per-label
model, three labels packed into one job, and the conditional model over three labels; what a job
writes and its exact resume also for each loss's conditional model (CONDITIONAL_DCGAN: the BCE one).
"""

from __future__ import annotations

import logging
import re
import signal
import subprocess

import pytest
import torch
from conftest import JOB_KINDS, PACKED_LABELS, assert_same_state, kill_after_checkpoints, log_rows, weights

from labelwise import losses, models
from labelwise.errors import LabelwiseError
from labelwise.train import LOG_COLUMNS, Budget, load_generator
from labelwise.train import checkpoint as checkpoint_files
from labelwise.train.checkpoint import list_checkpoints
from labelwise.train.monitor import live_log_path

# The conditional DCGAN (BCE loss, batch norm in both networks): JOB_KINDS' conditional kind trains the
# conditional WGAN-GP; the tests of what a job writes and of its exact resume run this one too.
CONDITIONAL_DCGAN = ("conditional", "cdcgan")
KINDS_AND_CONDITIONAL_DCGAN = [*((kind, None) for kind in JOB_KINDS), CONDITIONAL_DCGAN]


def all_checkpoints(outs) -> list[list[int]]:
    return [[i for i, _ in list_checkpoints(o.checkpoints)] for o in outs]


def assert_same_runs(outs_a, outs_b) -> None:
    """Bit-identical generators and identical logs (wall seconds aside), member by member; each one's
    live log ends equal to its final log."""
    for a, b in zip(outs_a, outs_b, strict=True):
        assert_same_state(weights(a.generator), weights(b.generator))
        assert log_rows(a.log) == log_rows(b.log)
        for out in (a, b):
            assert live_log_path(out.checkpoints).read_text() == out.log.read_text()


@pytest.mark.parametrize(
    "kind, model",
    [("one-label", "wcgan"), ("one-label", "dccgan"), ("packed", "dccgan"), ("conditional", "cgan"), CONDITIONAL_DCGAN],
)
def test_job_writes_each_members_generator_log_and_checkpoints(tmp_path, job, tiny_settings, kind, model):
    j = job(kind, model)
    results = j.train(tmp_path, Budget(iterations=12, checkpoint_every=5), tiny_settings)
    outs = j.outputs(tmp_path)
    assert [(r.iterations, r.stopped_by) for r in results] == [(12, "iterations")] * len(outs)
    for name, out in zip(j.names, outs):
        payload = torch.load(out.generator, weights_only=True)
        assert payload["model"] == model and payload["image_size"] == [28, 28] and payload["iterations"] == 12
        assert payload["training"]["iterations"] == 12 and payload["training"]["stopped_by"] == "iterations"
        label = j.labels[0] if kind == "conditional" else name
        gen, info = load_generator(out.generator, label=label)
        assert info["label"] == label
        assert gen(torch.randn(2, 8)).shape == (2, 1, 32, 32)  # MNIST's 28 px padded to the 32 px network
        if kind == "conditional":
            assert payload["labels"] == list(PACKED_LABELS)
        rows = log_rows(out.log)
        assert rows[0] == [c for c in LOG_COLUMNS if c != "wall_seconds"] and rows[-1][0] == "12"
        wasserstein = [r[4] for r in rows[1:]]
        wgan = models.get(model).loss == "wgan-gp"
        assert all(w != "" for w in wasserstein) if wgan else all(w == "" for w in wasserstein)
    assert all_checkpoints(outs) == [[12, 10]] * len(outs)  # the last two kept


def test_packed_members_write_the_one_label_format(tmp_path, job, tiny_settings):
    """A label trained packed leaves files of the same form as its own job: same keys, shapes, strides,
    fingerprint and random streams' layout."""
    budget = Budget(iterations=4, checkpoint_every=2)
    packed = job("packed")
    packed.train(tmp_path / "packed", budget, tiny_settings)
    one = job("one-label")  # label 5, the packed job's second member
    one.train(tmp_path / "one", budget, tiny_settings)
    (a,), b = one.outputs(tmp_path / "one"), packed.outputs(tmp_path / "packed")[1]
    pa, pb = (torch.load(o.generator, weights_only=True) for o in (a, b))
    for p in (pa, pb):
        assert p["training"].pop("seconds") > 0  # wall time: differs run to run
    assert {k: v for k, v in pa.items() if k != "state_dict"} == {k: v for k, v in pb.items() if k != "state_dict"}
    assert {k: (v.shape, v.dtype, v.stride()) for k, v in pa["state_dict"].items()} == {
        k: (v.shape, v.dtype, v.stride()) for k, v in pb["state_dict"].items()
    }
    ca, cb = (torch.load(list_checkpoints(o.checkpoints)[0][1], weights_only=True) for o in (a, b))
    assert ca.keys() == cb.keys() and ca["fingerprint"] == cb["fingerprint"]
    assert torch.equal(ca["rng_cpu"], cb["rng_cpu"]) and torch.equal(ca["rng_device"], cb["rng_device"])


def test_same_seed_same_weights_other_seed_other_weights(tmp_path, job, tiny_settings):
    j = job("one-label")
    for root, seed in (("a", 7), ("b", 7), ("c", 8)):
        j.train(tmp_path / root, Budget(iterations=6), tiny_settings, seed=seed)
    (a,), (b,), (c,) = (j.outputs(tmp_path / r) for r in "abc")
    assert_same_state(weights(a.generator), weights(b.generator))
    assert not torch.equal(weights(a.generator)["net.0.weight"], weights(c.generator)["net.0.weight"])


@pytest.mark.parametrize("kind, model", KINDS_AND_CONDITIONAL_DCGAN)
def test_longer_budget_resumes_bit_identically(tmp_path, job, tiny_settings, kind, model):
    j = job(kind, model)
    j.train(tmp_path / "straight", Budget(iterations=12, checkpoint_every=4), tiny_settings)
    j.train(tmp_path / "staged", Budget(iterations=6, checkpoint_every=4), tiny_settings)
    results = j.train(tmp_path / "staged", Budget(iterations=12, checkpoint_every=4), tiny_settings)
    assert {r.resumed_from for r in results} == {6}
    assert_same_runs(j.outputs(tmp_path / "straight"), j.outputs(tmp_path / "staged"))


def test_changed_settings_do_not_resume_stale_checkpoints(tmp_path, job, tiny_settings):
    j = job("one-label")
    j.train(tmp_path / "run", Budget(iterations=8, checkpoint_every=4), tiny_settings)
    changed = dict(tiny_settings, lr=5e-4)
    (result,) = j.train(tmp_path / "run", Budget(iterations=8, checkpoint_every=4), changed)
    assert result.resumed_from == 0
    j.train(tmp_path / "fresh", Budget(iterations=8, checkpoint_every=4), changed)
    assert_same_runs(j.outputs(tmp_path / "run"), j.outputs(tmp_path / "fresh"))


def test_corrupt_latest_checkpoint_falls_back_to_previous(tmp_path, job, tiny_settings, caplog):
    j = job("one-label", "dccgan")
    j.train(tmp_path / "straight", Budget(iterations=12, checkpoint_every=4), tiny_settings)
    j.train(tmp_path / "run", Budget(iterations=8, checkpoint_every=4), tiny_settings)
    (out,) = j.outputs(tmp_path / "run")
    latest = list_checkpoints(out.checkpoints)[0][1]
    latest.write_bytes(latest.read_bytes()[:100])  # truncated
    (result,) = j.train(tmp_path / "run", Budget(iterations=12, checkpoint_every=4), tiny_settings)
    assert result.resumed_from == 4 and "unreadable" in caplog.text
    assert_same_runs(j.outputs(tmp_path / "straight"), j.outputs(tmp_path / "run"))


def test_all_checkpoints_corrupt_is_a_clear_error(tmp_path, job, tiny_settings):
    j = job("one-label")
    j.train(tmp_path, Budget(iterations=4, checkpoint_every=2), tiny_settings)
    for _, path in list_checkpoints(j.outputs(tmp_path)[0].checkpoints):
        path.write_bytes(b"garbage")
    with pytest.raises(LabelwiseError, match="every checkpoint .* is unreadable.*delete the directory"):
        j.train(tmp_path, Budget(iterations=8, checkpoint_every=2), tiny_settings)


def test_checkpoint_formats_old_resumes_foreign_refused(tmp_path, job, tiny_settings):
    """A checkpoint written before format 2 (no pending diagnostics) resumes to the same weights; one of
    an unknown format stops the job with one line instead of being skipped or overwritten."""
    j = job("one-label")
    j.train(tmp_path / "straight", Budget(iterations=8, checkpoint_every=4), tiny_settings)
    j.train(tmp_path / "old", Budget(iterations=4, checkpoint_every=4), tiny_settings)
    (out,) = j.outputs(tmp_path / "old")
    path = list_checkpoints(out.checkpoints)[0][1]
    state = torch.load(path, weights_only=True)
    assert state["format"] == checkpoint_files.CHECKPOINT_FORMAT and len(state["pending"]) == 0
    del state["pending"]
    torch.save(dict(state, format=1), path)
    (result,) = j.train(tmp_path / "old", Budget(iterations=8, checkpoint_every=4), tiny_settings)
    assert result.resumed_from == 4
    assert_same_runs(j.outputs(tmp_path / "straight"), j.outputs(tmp_path / "old"))
    torch.save(dict(state, format=99), list_checkpoints(out.checkpoints)[0][1])
    with pytest.raises(LabelwiseError, match=r"a checkpoint of format 99, which this labelwise does not read"):
        j.train(tmp_path / "old", Budget(iterations=12, checkpoint_every=4), tiny_settings)


def test_capturable_optimizer_states_resume_on_the_cpu(tmp_path, job, tiny_settings):
    """Checkpoints of a CUDA-graph run hold Adam groups with capturable=True; resumed where no graph
    runs (the CPU), the run's own setting wins and the result equals a run never captured."""
    j = job("packed")
    j.train(tmp_path / "straight", Budget(iterations=6, checkpoint_every=3), tiny_settings)
    j.train(tmp_path / "graph", Budget(iterations=3, checkpoint_every=3), tiny_settings)
    for out in j.outputs(tmp_path / "graph"):
        path = list_checkpoints(out.checkpoints)[0][1]
        state = torch.load(path, weights_only=True)
        for key in ("opt_g", "opt_d"):
            state[key]["param_groups"] = [dict(g, capturable=True) for g in state[key]["param_groups"]]
        torch.save(state, path)
    j.train(tmp_path / "graph", Budget(iterations=6, checkpoint_every=3), tiny_settings)
    assert_same_runs(j.outputs(tmp_path / "straight"), j.outputs(tmp_path / "graph"))
    state = torch.load(list_checkpoints(j.outputs(tmp_path / "graph")[0].checkpoints)[0][1], weights_only=True)
    assert not any(g["capturable"] for g in state["opt_g"]["param_groups"])


@pytest.mark.parametrize("kind", JOB_KINDS)
def test_divergence_names_the_member_and_keeps_the_last_good_checkpoint(
    tmp_path, job, tiny_settings, kind, monkeypatch
):
    j = job(kind)
    calls = {"n": 0}
    real_loss = losses.wgan_generator_loss

    def exploding(critic, fake):
        calls["n"] += 1
        loss = real_loss(critic, fake)
        if calls["n"] > 6:  # one member diverges (the second when packed); the others are fine
            poison = torch.ones_like(loss)
            poison[1 if kind == "packed" else 0] = float("nan")
            loss = loss * poison
        return loss

    monkeypatch.setattr(losses, "wgan_generator_loss", exploding)
    who = {"one-label": "wcgan label 5", "packed": "wcgan labels 2,5,7", "conditional": "cgan labels 2,5,7"}[kind]
    member = "label 5: " if kind == "packed" else ""  # which member, where the job's name does not say it
    with pytest.raises(LabelwiseError) as err:
        j.train(tmp_path, Budget(iterations=40, checkpoint_every=5), tiny_settings)
    assert re.fullmatch(
        rf"\[{who}\] training diverged: non-finite loss by iteration 7 \({member}d_loss=\S+, g_loss=nan\); "
        r"the last good checkpoints? (in \S+ is|are) kept\. Lower models\.\w+\.lr or change the seed, then rerun",
        str(err.value),
    ), str(err.value)
    outs = j.outputs(tmp_path)
    assert all_checkpoints(outs) == [[5]] * len(outs)
    assert not any(o.generator.exists() or o.log.exists() for o in outs)


def test_nonfinite_weights_are_never_saved(tmp_path, job, tiny_settings, monkeypatch):
    """A step that leaves one label's weights NaN: no checkpoint, snapshot or generator of any label."""
    adam_step = torch.optim.Adam.step
    latent = tiny_settings["latent_dim"]

    def poisoned_step(self, *args, **kwargs):
        result = adam_step(self, *args, **kwargs)
        first = self.param_groups[0]["params"][0]
        if first.shape[0] == len(PACKED_LABELS) * latent and int(self.state[first]["step"]) == 7:
            with torch.no_grad():  # the packed generator's first weight, in label 5's block
                first[latent].view(-1)[0] = float("nan")
        return result

    monkeypatch.setattr(torch.optim.Adam, "step", poisoned_step)
    j = job("packed")
    budget = Budget(iterations=20, checkpoint_every=5, snapshots=[0.35])  # snapshot point 7
    with pytest.raises(
        LabelwiseError, match=r"non-finite weights at iteration 7 \(label 5: generator\.net\.0\.weight\)"
    ):
        j.train(tmp_path, budget, tiny_settings)
    for o in j.outputs(tmp_path):
        assert [i for i, _ in list_checkpoints(o.checkpoints)] == [5]
        assert not (o.checkpoints / "snapshots").exists() or not any((o.checkpoints / "snapshots").iterdir())
        assert not o.generator.exists()


@pytest.mark.parametrize("kind", JOB_KINDS)
def test_minutes_budget_stops_every_member_together(tmp_path, job, tiny_settings, kind):
    j = job(kind)
    results = j.train(tmp_path, Budget(iterations=10**6, minutes=0.01), tiny_settings)
    assert {r.stopped_by for r in results} == {"minutes"} and len({r.iterations for r in results}) == 1
    assert 0 < results[0].iterations < 10**6
    assert all(o.generator.exists() and o.log.exists() for o in j.outputs(tmp_path))


def test_kill_during_checkpoint_save_resumes_from_the_common_iteration(tmp_path, job, tiny_settings, caplog):
    """A kill between members' saves leaves them one checkpoint apart: all resume from the older one."""
    caplog.set_level(logging.INFO, logger="labelwise.train")
    j = job("packed")
    j.train(tmp_path / "straight", Budget(iterations=15, checkpoint_every=5), tiny_settings)
    j.train(tmp_path / "run", Budget(iterations=10, checkpoint_every=5), tiny_settings)
    for out in j.outputs(tmp_path / "run")[1:]:  # label 2 saved iteration 10, the kill came before the others did
        dict(list_checkpoints(out.checkpoints))[10].unlink()
    results = j.train(tmp_path / "run", Budget(iterations=15, checkpoint_every=5), tiny_settings)
    assert [r.resumed_from for r in results] == [5, 5, 5] and "different iterations" in caplog.text
    assert_same_runs(j.outputs(tmp_path / "straight"), j.outputs(tmp_path / "run"))
    assert all_checkpoints(j.outputs(tmp_path / "run")) == [[15, 10]] * 3


def test_a_member_without_checkpoint_restarts_the_job(tmp_path, job, tiny_settings):
    j = job("packed")
    budget = Budget(iterations=4, checkpoint_every=2)
    two = type(j)("packed", j.shards[:2], j.labels[:2], j.model)
    two.train(tmp_path / "run", budget, tiny_settings)
    results = j.train(tmp_path / "run", budget, tiny_settings)
    assert [r.resumed_from for r in results] == [0, 0, 0]
    j.train(tmp_path / "fresh", budget, tiny_settings)
    assert_same_runs(j.outputs(tmp_path / "fresh"), j.outputs(tmp_path / "run"))


@pytest.mark.parametrize("kind, model", KINDS_AND_CONDITIONAL_DCGAN)
def test_sigkill_and_rerun_ends_bit_identical(tmp_path, job, tiny_settings, kind, model):
    """Kill a real training process after its second checkpoint, rerun it: the weights (the generator
    average included) and log of a run that never stopped, with DiffAugment's draws and EMA on."""
    j = job(kind, model)
    settings = dict(tiny_settings, width=8, augment="diffaugment", ema=0.95)
    if models.get(j.model).loss != "wgan-gp":  # no gradient penalty: `train --settings` refuses the key
        settings.pop("gp_lambda")
    budget = {"iterations": 120, "checkpoint_every": 10}
    j.train(tmp_path / "straight", Budget(**budget), settings)  # in process: the same computation
    killed = tmp_path / "killed"
    proc = subprocess.Popen(j.command(killed, settings, budget), stderr=subprocess.DEVNULL)
    kill_after_checkpoints(proc, j.outputs(killed)[-1].checkpoints, 2, timeout=120)
    done = list_checkpoints(j.outputs(killed)[0].checkpoints)[0][0]
    assert 0 < done < budget["iterations"], "the kill must land mid-run"
    assert not any(o.generator.exists() for o in j.outputs(killed))
    for straight, out in zip(j.outputs(tmp_path / "straight"), j.outputs(killed)):  # watched while it ran
        live = log_rows(live_log_path(out.checkpoints))
        assert int(live[-1][0]) >= done and live == log_rows(straight.log)[: len(live)]
    rerun = subprocess.run(j.command(killed, settings, budget), capture_output=True, text=True, check=True)
    assert "resuming from checkpoint at iteration" in rerun.stderr
    assert_same_runs(j.outputs(tmp_path / "straight"), j.outputs(killed))


@pytest.mark.parametrize("kind", JOB_KINDS)
def test_sigterm_checkpoints_stops_in_one_line_and_resumes_to_the_same_log(tmp_path, job, tiny_settings, kind):
    """SIGTERM (a scheduler's time limit) between log points: a checkpoint, one error line, exit 1; the
    rerun ends with the weights and the log (every row, every mean) of a run that never stopped."""
    j = job(kind)
    budget = {"iterations": 400, "checkpoint_every": 1000}  # log rows every 4 iterations, no other checkpoint
    j.train(tmp_path / "straight", Budget(**budget), tiny_settings)  # in process: the same computation
    root = tmp_path / "stopped"
    proc = subprocess.Popen(j.command(root, tiny_settings, budget), stderr=subprocess.PIPE, text=True)
    seen = []
    for line in proc.stderr:  # wait for training to be under way (its first progress line)
        seen.append(line)
        if "it/s" in line:
            break
    proc.send_signal(signal.SIGTERM)
    _, rest = proc.communicate(timeout=60)
    err = "".join(seen) + rest
    assert proc.returncode == 1 and "Traceback" not in err
    assert re.search(r"stopped by signal 15 at iteration \d+; checkpoints? saved.*rerun to resume", err), err[-800:]
    ((iteration, path),) = list_checkpoints(j.outputs(root)[0].checkpoints)
    assert 0 < iteration < budget["iterations"]
    if iteration % 4:  # stopped between log points: the diagnostics since the last row wait in the checkpoint
        assert len(torch.load(path, weights_only=True)["pending"]) == iteration % 4
    for straight, out in zip(j.outputs(tmp_path / "straight"), j.outputs(root)):  # the live log: rows so far
        assert log_rows(live_log_path(out.checkpoints)) == log_rows(straight.log)[: 1 + iteration // 4]
    rerun = subprocess.run(j.command(root, tiny_settings, budget), capture_output=True, text=True, check=True)
    assert f"resuming from checkpoint at iteration {iteration}" in rerun.stderr
    assert_same_runs(j.outputs(tmp_path / "straight"), j.outputs(root))


@pytest.mark.parametrize("kind", JOB_KINDS)
def test_every_job_logs_where_it_runs_and_its_losses(tmp_path, job, tiny_settings, kind, caplog):
    """The first line names device, threads, CUDA_VISIBLE_DEVICES, host and start (the evidence that
    concurrent jobs got distinct GPUs) and which budget set the iterations; progress lines carry rate,
    ETA and losses; the last line the iterations, the budget that stopped the job and label-iterations/s."""
    caplog.set_level(logging.INFO, logger="labelwise.train")
    j = job(kind)
    j.train(tmp_path, Budget(iterations=6, checkpoint_every=3), tiny_settings, progress_seconds=0)
    lines = [r.getMessage() for r in caplog.records]
    who = {"one-label": "wcgan label 5", "packed": "wcgan labels 2,5,7", "conditional": "cgan labels 2,5,7"}[kind]
    assert re.fullmatch(
        rf"\[{who}\] device cpu, 1 thread\(s\), CUDA_VISIBLE_DEVICES=\S+, host \S+, start \S+ \(.*fp32.*\); "
        r"budget: iteration cap 6 \(no compute budget\)",
        lines[0],
    ), lines[0]
    progress = [line for line in lines if " it/s ETA " in line]
    assert progress and all(re.search(r"d_loss=\S+ g_loss=\S+ W=\S+", line) for line in progress), progress
    assert re.fullmatch(
        rf"\[{who}\] done: 6 iterations in [\d.]+ s \(stopped by the iteration cap 6 \(no compute budget\)\); "
        r"[\d.]+ label-it/s",
        lines[-1],
    ), lines[-1]


def test_bad_arguments_are_one_clear_error_before_anything_is_written(tmp_path, job, make_shard, tiny_settings):
    import numpy as np

    from labelwise.images import write_images

    j = job("packed")
    budget, out = Budget(iterations=2), tmp_path / "out"
    cases = [
        (dict(shards=j.shards[:2]), "one Outputs"),
        (dict(labels=[2, 4, 7]), "holds label 5 but label 4"),
        (dict(model="gan"), "unknown model"),
        (dict(precision="fp16"), "runtime.precision must be one of fp32, bf16, got 'fp16'"),
        (dict(packed_kernel="fast"), "runtime.packed_kernel must be one of auto, grouped, bmm, got 'fast'"),
        (dict(cuda_graph="maybe"), "runtime.cuda_graph must be one of auto, on, off, got 'maybe'"),
    ]
    from labelwise.train import train_job

    for change, message in cases:
        args = dict(shards=j.shards, model="wcgan", labels=j.labels, threads=1) | change
        shards, model = args.pop("shards"), args.pop("model")
        with pytest.raises(LabelwiseError, match=re.escape(message)):
            train_job(shards, model, tiny_settings, budget, 0, j.outputs(out), **args)
    twice = [j.shards[0], j.shards[0]]
    with pytest.raises(LabelwiseError, match="listed twice"):
        train_job(twice, "wcgan", tiny_settings, budget, 0, j.outputs(out)[:2], threads=1)
    other = tmp_path / "rgb.h5"
    write_images(other, np.zeros((4, 3, 28, 28), np.uint8), label=9)
    with pytest.raises(LabelwiseError, match=r"images of shape \(3, 28, 28\) next to \(1, 28, 28\)"):
        train_job([j.shards[0], other], "wcgan", tiny_settings, budget, 0, j.outputs(out)[:2], threads=1)
    with pytest.raises(LabelwiseError, match="holds label 3 but label 4"):
        train_job([make_shard(label=3)], "wcgan", tiny_settings, budget, 0, j.outputs(out)[:1], labels=[4])
    if not torch.cuda.is_available():  # the no-GPU error can only be provoked without one
        with pytest.raises(LabelwiseError, match="runtime.device is 'cuda'"):
            j.train(out, budget, tiny_settings, device="cuda")
    assert not out.exists()  # refused before anything was written


@pytest.mark.parametrize("kind", JOB_KINDS)
def test_tensorboard_runs_hold_the_logged_scalars_and_sample_grids(tmp_path, job, tiny_settings, kind):
    """runtime.tensorboard: one run per model and member whose scalars are the log's rows (losses,
    Wasserstein estimate; label-iterations/s), with a sample grid every N iterations; resumed after a
    longer budget, the run goes on; and watching changes nothing the job computes."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    j = job(kind)
    j.train(tmp_path / "plain", Budget(iterations=12, checkpoint_every=6), tiny_settings)
    runs = tmp_path / "tb"
    j.train(tmp_path / "watched", Budget(iterations=8, checkpoint_every=4), tiny_settings, tensorboard=runs)
    j.train(
        tmp_path / "watched",
        Budget(iterations=12, checkpoint_every=6),
        tiny_settings,
        tensorboard=runs,
        tensorboard_images=4,
    )
    assert_same_runs(j.outputs(tmp_path / "plain"), j.outputs(tmp_path / "watched"))
    assert sorted(p.name for p in (runs / j.model).iterdir()) == sorted(map(str, j.names))
    for name, out in zip(j.names, j.outputs(tmp_path / "watched")):
        events = EventAccumulator(str(runs / j.model / str(name)), size_guidance={"scalars": 0, "images": 0})
        events.Reload()
        rows = [line.split(",") for line in out.log.read_text().splitlines()[1:]]
        for column in ("d_loss", "g_loss", "wasserstein_estimate"):
            logged = {e.step: e.value for e in events.Scalars(f"train/{column}")}
            expected = {int(r[0]): float(r[LOG_COLUMNS.index(column)]) for r in rows}
            assert logged.keys() == expected.keys()  # every row once, the resumed part included
            assert all(logged[i] == pytest.approx(v, rel=1e-5) for i, v in expected.items()), column
        speed = [e for e in events.Scalars("speed/label_iterations_per_s")]
        assert speed and all(e.value > 0 for e in speed)
        grids = events.Images("samples")
        assert [e.step for e in grids] == [12]  # every 4 iterations, asked for in the resumed part only
        assert grids[0].width > 0 and grids[0].height > 0


def test_tensorboard_without_its_package_is_one_clear_error(tmp_path, job, tiny_settings, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails as when not installed
    j = job("one-label")
    with pytest.raises(LabelwiseError, match="runtime.tensorboard is on but TensorBoard cannot be imported"):
        j.train(tmp_path, Budget(iterations=4, checkpoint_every=2), tiny_settings, tensorboard=tmp_path / "tb")
    assert not any(o.checkpoints.exists() for o in j.outputs(tmp_path))
