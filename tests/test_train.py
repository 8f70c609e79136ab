"""Training: outputs, exact resume after a kill, budget extension, stale/corrupt checkpoints, divergence."""

from __future__ import annotations

import json
import signal
import subprocess
import sys

import pytest
import torch
from conftest import kill_after_checkpoints

from labelwise import losses
from labelwise.errors import LabelwiseError
from labelwise.train import LOG_COLUMNS, Budget, Outputs, load_generator, train_label
from labelwise.train.checkpoint import list_checkpoints


def outputs(root):
    return Outputs(generator=root / "g.pt", log=root / "log.csv", checkpoints=root / "ckpt")


def weights(path):
    gen, _ = load_generator(path)
    return gen.state_dict()


def assert_same_weights(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), f"tensor {k} differs"


@pytest.mark.parametrize("model", ["wcgan", "dccgan"])
def test_train_writes_generator_and_log(tmp_path, make_shard, tiny_settings, model):
    shard = make_shard(label=3)
    out = outputs(tmp_path / model)
    result = train_label(shard, model, tiny_settings, Budget(iterations=12, checkpoint_every=5), 0, out, threads=1)
    assert result.iterations == 12 and result.stopped_by == "iterations"
    gen, info = load_generator(out.generator)
    assert info["label"] == 3 and info["model"] == model and info["image_size"] == [28, 28]
    assert gen(torch.randn(2, 8)).shape == (2, 1, 32, 32)  # MNIST's 28 px padded to the 32 px network
    lines = out.log.read_text().splitlines()
    assert lines[0].split(",") == list(LOG_COLUMNS)
    assert [int(line.split(",")[0]) for line in lines[1:]][-1] == 12
    wasserstein = [line.split(",")[5] for line in lines[1:]]
    assert all(w != "" for w in wasserstein) if model == "wcgan" else all(w == "" for w in wasserstein)
    assert [i for i, _ in list_checkpoints(out.checkpoints)] == [12, 10]  # the last two kept


def test_same_seed_same_weights_other_label_other_weights(tmp_path, make_shard, tiny_settings):
    shard = make_shard(label=1)
    a, b = outputs(tmp_path / "a"), outputs(tmp_path / "b")
    for out in (a, b):
        train_label(shard, "wcgan", tiny_settings, Budget(iterations=6), seed=7, outputs=out, threads=1)
    assert_same_weights(weights(a.generator), weights(b.generator))
    c = outputs(tmp_path / "c")
    train_label(shard, "wcgan", tiny_settings, Budget(iterations=6), seed=8, outputs=c, threads=1)
    assert not torch.equal(weights(a.generator)["net.0.weight"], weights(c.generator)["net.0.weight"])


def test_longer_budget_resumes_and_matches_uninterrupted(tmp_path, make_shard, tiny_settings):
    shard = make_shard(label=2)
    straight = outputs(tmp_path / "straight")
    train_label(shard, "wcgan", tiny_settings, Budget(iterations=20, checkpoint_every=5), 0, straight, threads=1)
    staged = outputs(tmp_path / "staged")
    train_label(shard, "wcgan", tiny_settings, Budget(iterations=10, checkpoint_every=5), 0, staged, threads=1)
    result = train_label(shard, "wcgan", tiny_settings, Budget(iterations=20, checkpoint_every=5), 0, staged, threads=1)
    assert result.resumed_from == 10
    assert_same_weights(weights(straight.generator), weights(staged.generator))
    # The log of the resumed run holds every iteration's row, as the uninterrupted one does.
    col = lambda p: [line.split(",")[0] for line in p.read_text().splitlines()]  # noqa: E731
    assert col(straight.log) == col(staged.log)


def test_changed_settings_do_not_resume_stale_checkpoints(tmp_path, make_shard, tiny_settings):
    shard = make_shard(label=2)
    out = outputs(tmp_path)
    train_label(shard, "wcgan", tiny_settings, Budget(iterations=8, checkpoint_every=4), 0, out, threads=1)
    changed = dict(tiny_settings, lr=5e-4)
    result = train_label(shard, "wcgan", changed, Budget(iterations=8, checkpoint_every=4), 0, out, threads=1)
    assert result.resumed_from == 0
    fresh = outputs(tmp_path / "fresh")
    train_label(shard, "wcgan", changed, Budget(iterations=8, checkpoint_every=4), 0, fresh, threads=1)
    assert_same_weights(weights(out.generator), weights(fresh.generator))


def test_corrupt_latest_checkpoint_falls_back_to_previous(tmp_path, make_shard, tiny_settings, caplog):
    shard = make_shard(label=4)
    straight = outputs(tmp_path / "straight")
    train_label(shard, "dccgan", tiny_settings, Budget(iterations=12, checkpoint_every=4), 0, straight, threads=1)
    out = outputs(tmp_path / "run")
    train_label(shard, "dccgan", tiny_settings, Budget(iterations=8, checkpoint_every=4), 0, out, threads=1)
    latest = list_checkpoints(out.checkpoints)[0][1]
    latest.write_bytes(latest.read_bytes()[:100])  # truncated
    result = train_label(shard, "dccgan", tiny_settings, Budget(iterations=12, checkpoint_every=4), 0, out, threads=1)
    assert result.resumed_from == 4
    assert "unreadable" in caplog.text
    assert_same_weights(weights(straight.generator), weights(out.generator))


def test_all_checkpoints_corrupt_is_a_clear_error(tmp_path, make_shard, tiny_settings):
    shard = make_shard(label=4)
    out = outputs(tmp_path)
    train_label(shard, "wcgan", tiny_settings, Budget(iterations=4, checkpoint_every=2), 0, out, threads=1)
    for _, path in list_checkpoints(out.checkpoints):
        path.write_bytes(b"garbage")
    with pytest.raises(LabelwiseError, match="every checkpoint .* is unreadable.*delete the directory"):
        train_label(shard, "wcgan", tiny_settings, Budget(iterations=8, checkpoint_every=2), 0, out, threads=1)


def test_divergence_stops_with_message_and_keeps_last_good_checkpoint(tmp_path, make_shard, tiny_settings, monkeypatch):
    shard = make_shard(label=5)
    out = outputs(tmp_path)
    calls = {"n": 0}
    real_loss = losses.wgan_generator_loss

    def exploding(critic, fake):
        calls["n"] += 1
        loss = real_loss(critic, fake)
        return loss * float("nan") if calls["n"] > 6 else loss

    monkeypatch.setattr(losses, "wgan_generator_loss", exploding)
    with pytest.raises(LabelwiseError, match="diverged.*last good checkpoint"):
        train_label(shard, "wcgan", tiny_settings, Budget(iterations=40, checkpoint_every=5), 0, out, threads=1)
    assert [i for i, _ in list_checkpoints(out.checkpoints)] == [5]
    assert not out.generator.exists() and not out.log.exists()


def test_minutes_budget_stops_early(tmp_path, make_shard, tiny_settings):
    out = outputs(tmp_path)
    result = train_label(
        make_shard(), "wcgan", tiny_settings, Budget(iterations=10**6, minutes=0.02), 0, out, threads=1
    )
    assert result.stopped_by == "minutes" and 0 < result.iterations < 10**6
    assert out.generator.exists()


def test_cuda_requested_without_gpu_is_an_error(tmp_path, make_shard, tiny_settings):
    if torch.cuda.is_available():
        pytest.skip("a CUDA GPU is present: the no-GPU error cannot be provoked")
    with pytest.raises(LabelwiseError, match="runtime.device is 'cuda'"):
        train_label(make_shard(), "wcgan", tiny_settings, Budget(iterations=2), 0, outputs(tmp_path), device="cuda")


def test_shard_of_another_label_is_rejected(tmp_path, make_shard, tiny_settings):
    with pytest.raises(LabelwiseError, match="holds label 3 but label 4"):
        train_label(make_shard(label=3), "wcgan", tiny_settings, Budget(iterations=2), 0, outputs(tmp_path), label=4)


def train_cmd(shard, root, settings, budget):
    blob = json.dumps({"model": settings, "budget": budget, "seed": 0})
    return [
        sys.executable,
        "-m",
        "labelwise.cli",
        "train",
        "--model",
        "wcgan",
        "--label",
        "0",
        "--settings",
        blob,
        "--shard",
        str(shard),
        "--generator",
        str(root / "g.pt"),
        "--log",
        str(root / "log.csv"),
        "--checkpoints",
        str(root / "ckpt"),
        "--device",
        "cpu",
        "--threads",
        "1",
        "--progress-seconds",
        "0.5",
    ]


def test_sigkill_and_rerun_ends_bit_identical(tmp_path, make_shard, tiny_settings):
    """Kill a real training process after its second checkpoint, rerun it: same weights as no kill."""
    shard = make_shard(label=0, n=32)
    settings = dict(tiny_settings, width=8)
    budget = {"iterations": 300, "checkpoint_every": 20}
    straight = tmp_path / "straight"
    subprocess.run(train_cmd(shard, straight, settings, budget), check=True, capture_output=True)

    killed = tmp_path / "killed"
    proc = subprocess.Popen(train_cmd(shard, killed, settings, budget), stderr=subprocess.PIPE)
    kill_after_checkpoints(proc, killed / "ckpt", 2, timeout=60)
    done = list_checkpoints(killed / "ckpt")[0][0]
    assert 0 < done < budget["iterations"], "the kill must land mid-run"
    assert not (killed / "g.pt").exists()

    rerun = subprocess.run(train_cmd(shard, killed, settings, budget), capture_output=True, text=True, check=True)
    assert f"resuming from checkpoint at iteration {done}" in rerun.stderr
    assert_same_weights(weights(straight / "g.pt"), weights(killed / "g.pt"))


def test_sigterm_saves_checkpoint_and_exits_with_one_line(tmp_path, make_shard, tiny_settings):
    shard = make_shard(label=0)
    root = tmp_path
    budget = {"iterations": 100000, "checkpoint_every": 100000}
    proc = subprocess.Popen(train_cmd(shard, root, tiny_settings, budget), stderr=subprocess.PIPE, text=True)
    seen = []
    for line in proc.stderr:  # wait for training to be under way (its first progress line)
        seen.append(line)
        if "it/s" in line:
            break
    proc.send_signal(signal.SIGTERM)
    _, rest = proc.communicate(timeout=60)
    err = "".join(seen) + rest
    assert proc.returncode == 1
    assert "stopped by signal 15" in err and "rerun to resume" in err
    assert "Traceback" not in err
    ((iteration, _),) = list_checkpoints(root / "ckpt")
    assert 0 < iteration < budget["iterations"]


def test_cgan_trains_one_conditional_generator_over_all_labels(tmp_path, make_shard, tiny_settings):
    from labelwise.sample import sample_label

    shards = [make_shard(label=k, n=16 + k) for k in (2, 5, 9)]
    out = outputs(tmp_path)
    result = train_label(shards, "cgan", tiny_settings, Budget(iterations=6, checkpoint_every=3), 0, out, threads=1)
    assert result.iterations == 6
    with pytest.raises(LabelwiseError, match="label 3 is not among them"):
        load_generator(out.generator, label=3)
    gen5, info = load_generator(out.generator, label=5)
    gen9, _ = load_generator(out.generator, label=9)
    z = torch.randn(4, 8)
    assert info["label"] == 5 and gen5(z).shape == (4, 1, 32, 32)
    assert not torch.equal(gen5(z), gen9(z))  # the class changes the image
    sample_label(out.generator, tmp_path / "s.h5", 7, 0, label=9, class_name="9")
    from labelwise.images import read_images

    images, attrs = read_images(tmp_path / "s.h5")
    assert images.shape == (7, 1, 28, 28) and attrs["label"] == 9 and attrs["model"] == "cgan"
    # Resumes like the per-label models.
    result = train_label(shards, "cgan", tiny_settings, Budget(iterations=9, checkpoint_every=3), 0, out, threads=1)
    assert result.resumed_from == 6
