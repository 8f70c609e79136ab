"""Divergence in the weights: NaN/Inf written into a parameter by an optimiser step is caught before
any checkpoint, snapshot or generator file holds it; a rerun resumes from the last good checkpoint,
diverges again the same way (same message), and without the fault completes like a run that never
diverged.  (NaN in a loss: tests/test_train.py::test_divergence_stops_with_message_and_keeps_last_good_checkpoint.)
"""

from __future__ import annotations

import logging

import pytest
import torch

from labelwise.errors import LabelwiseError
from labelwise.train import Budget, Outputs, load_generator, loop, train_label
from labelwise.train.checkpoint import list_checkpoints, list_snapshots, save_checkpoint

pytestmark = pytest.mark.faults


def outputs(root):
    return Outputs(generator=root / "g.pt", log=root / "log.csv", checkpoints=root / "ckpt")


def poison_generator_at(monkeypatch, step: int) -> None:
    """Right after the generator optimiser's `step`-th step (Adam's own count, which a resume restores,
    so the fault recurs at the same iteration) write +Inf into one generator weight.  The losses of that
    iteration were computed before the step, so they are finite: only a check of the weights sees it."""
    generator_params: set[int] = set()
    build = loop.job_networks

    def tracking_build(*args, **kwargs):
        networks = build(*args, **kwargs)
        generator_params.update(id(p) for p in networks.gen.parameters())
        return networks

    adam_step = torch.optim.Adam.step

    def poisoned_step(self, *args, **kwargs):
        result = adam_step(self, *args, **kwargs)
        first = self.param_groups[0]["params"][0]
        if id(first) in generator_params and int(self.state[first]["step"]) == step:
            with torch.no_grad():
                first.view(-1)[0] = float("inf")
        return result

    monkeypatch.setattr(loop, "job_networks", tracking_build)
    monkeypatch.setattr(torch.optim.Adam, "step", poisoned_step)


@pytest.mark.parametrize("where, step, snapshots", [("checkpoint", 10, ()), ("snapshot", 7, (0.35,))])
def test_nonfinite_weights_never_saved_rerun_resumes_last_good(
    tmp_path, make_shard, tiny_settings, monkeypatch, caplog, where, step, snapshots
):
    shard = make_shard(label=5)
    budget = Budget(iterations=20, checkpoint_every=5, snapshots=snapshots)
    out = outputs(tmp_path / "run")
    poison_generator_at(monkeypatch, step)
    caplog.set_level(logging.INFO, logger="labelwise")
    for attempt in range(2):  # the first run, then a rerun that meets the same fault
        caplog.clear()
        with pytest.raises(LabelwiseError) as err:
            train_label(shard, "wcgan", tiny_settings, budget, 0, out, threads=1)
        msg = str(err.value)
        assert f"training diverged: non-finite weights at iteration {step} (generator." in msg
        assert "last good checkpoint" in msg and str(out.checkpoints) in msg and "models.wcgan.lr" in msg
        assert [i for i, _ in list_checkpoints(out.checkpoints)] == [5]
        assert list_snapshots(out.checkpoints) == []
        assert not out.generator.exists() and not out.log.exists()
        if attempt:
            assert "resuming from checkpoint at iteration 5" in caplog.text
    state = torch.load(list_checkpoints(out.checkpoints)[0][1], weights_only=True)
    assert all(torch.isfinite(v).all() for v in state["generator"].values() if v.is_floating_point())

    monkeypatch.undo()  # the cause removed (in life: a lower lr would start afresh; here: same settings)
    result = train_label(shard, "wcgan", tiny_settings, budget, 0, out, threads=1)
    assert result.resumed_from == 5
    straight = outputs(tmp_path / "straight")
    train_label(shard, "wcgan", tiny_settings, budget, 0, straight, threads=1)
    a, b = load_generator(out.generator)[0].state_dict(), load_generator(straight.generator)[0].state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a) and all(torch.isfinite(a[k]).all() for k in a)


def test_save_checkpoint_refuses_nonfinite_weights(tmp_path):
    """The guard in save_checkpoint itself (packed training saves through it too)."""
    good = {"fingerprint": "f", "iteration": 2, "generator": {"w": torch.ones(3)}, "critic": {"b": torch.zeros(2)}}
    save_checkpoint(tmp_path, 2, good)
    bad = dict(good, iteration=4, critic={"b": torch.tensor([0.0, float("nan")])})
    with pytest.raises(
        LabelwiseError,
        match=r"non-finite weights at iteration 4 \(critic\.b\).*ckpt-000000004\.pt "
        r"not written.*ckpt-000000002\.pt is kept",
    ):
        save_checkpoint(tmp_path, 4, bad)
    assert [i for i, _ in list_checkpoints(tmp_path)] == [2]
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt-000000002.pt"]
