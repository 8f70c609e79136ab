"""Generator snapshots along training (budget.snapshots) and FID against training time."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import JOB_KINDS, TINY, assert_same_state, snakemake, weights

from labelwise.errors import LabelwiseError
from labelwise.train import Budget, Outputs, load_generator, train_label
from labelwise.train import checkpoint as checkpoint_files
from labelwise.train.checkpoint import list_checkpoints, list_snapshots
from labelwise.train.generator_files import load_snapshots, snapshot_generator


def outputs(root, bundle=True):
    return Outputs(
        generator=root / "g.pt",
        log=root / "log.csv",
        checkpoints=root / "ckpt",
        snapshots=root / "snapshots.pt" if bundle else None,
    )


def taken(out):
    return [i for i, _ in list_snapshots(out.checkpoints)]


def test_snapshot_points_round_half_up_and_merge():
    assert Budget(iterations=6, snapshots=[0.5, 1.0]).snapshot_points() == [(3, 0.5), (6, 1.0)]
    assert Budget(iterations=5, snapshots=[0.5]).snapshot_points() == [(3, 0.5)]  # 2.5 -> 3
    assert Budget(iterations=4, snapshots=[0.01, 0.5, 0.51]).snapshot_points() == [(1, 0.01), (2, 0.5)]
    assert Budget(iterations=4).snapshot_points() == []
    with pytest.raises(LabelwiseError, match="budget.snapshots"):
        Budget(iterations=4, snapshots=[1.5])


@pytest.mark.parametrize("kind", JOB_KINDS)
def test_snapshots_written_at_their_iterations_and_bundled(tmp_path, job, tiny_settings, kind):
    j = job(kind)
    budget = Budget(iterations=8, checkpoint_every=4, snapshots=[0.25, 0.5, 1.0])
    j.train(tmp_path, budget, tiny_settings, snapshots=True)
    for name, out in zip(j.names, j.outputs(tmp_path, snapshots=True)):
        assert taken(out) == [2, 4, 8]
        bundle = torch.load(out.snapshots, weights_only=True)  # plain tensors and types only
        entries = bundle["snapshots"]
        assert [e["iteration"] for e in entries] == [2, 4, 8] and [e["fraction"] for e in entries] == [0.25, 0.5, 1.0]
        assert 0 < entries[0]["elapsed"] < entries[1]["elapsed"] < entries[2]["elapsed"]
        assert bundle["budget_iterations"] == 8
        # the last point is the final generator
        assert_same_state(entries[-1]["state_dict"], weights(out.generator))
        assert not torch.equal(
            entries[0]["state_dict"]["convs.0.weight" if kind == "conditional" else "net.0.weight"],
            entries[-1]["state_dict"]["convs.0.weight" if kind == "conditional" else "net.0.weight"],
        )
        if kind == "conditional":  # one bundle for every label, each snapshot bound to a label on loading
            assert entries[-1]["labels"] == j.labels
            z = torch.randn(3, 8)
            for label in j.labels:
                snap, info = snapshot_generator(load_snapshots(out.snapshots)[-1], label=label)
                final, _ = load_generator(out.generator, label=label)
                assert info["label"] == label and torch.equal(snap(z), final(z))
            with pytest.raises(LabelwiseError, match="label 3 is not among them"):
                snapshot_generator(load_snapshots(out.snapshots)[-1], label=3)
        else:
            assert entries[0]["label"] == name
            gen, info = snapshot_generator(load_snapshots(out.snapshots)[0])
            assert info["iteration"] == 2 and gen(torch.randn(2, 8)).shape == (2, 1, 32, 32)


@pytest.mark.parametrize("kind", JOB_KINDS)
def test_a_crash_and_resume_keeps_the_snapshots_and_ends_identical(tmp_path, job, tiny_settings, kind, monkeypatch):
    j = job(kind)
    budget = Budget(iterations=12, checkpoint_every=4, snapshots=[0.25, 0.5, 1.0])  # snapshots at 3, 6, 12
    j.train(tmp_path / "straight", budget, tiny_settings, snapshots=True)

    real_save = checkpoint_files.save_checkpoint

    def crash_at_8(directory, iteration, state):
        if iteration == 8:  # the process dies before its checkpoints at 8: the rerun resumes from 4
            raise RuntimeError("killed")
        return real_save(directory, iteration, state)

    monkeypatch.setattr(checkpoint_files, "save_checkpoint", crash_at_8)
    with pytest.raises(RuntimeError, match="killed"):
        j.train(tmp_path / "crashed", budget, tiny_settings, snapshots=True)
    monkeypatch.undo()
    crashed = j.outputs(tmp_path / "crashed", snapshots=True)
    assert {tuple(taken(o)) for o in crashed} == {(3, 6)}
    assert {tuple(i for i, _ in list_checkpoints(o.checkpoints)) for o in crashed} == {(4,)}
    before = [{i: (p.stat().st_mtime_ns, p.read_bytes()) for i, p in list_snapshots(o.checkpoints)} for o in crashed]

    results = j.train(tmp_path / "crashed", budget, tiny_settings, snapshots=True)
    assert {r.resumed_from for r in results} == {4}
    for out, earlier, straight in zip(crashed, before, j.outputs(tmp_path / "straight", snapshots=True)):
        after = dict(list_snapshots(out.checkpoints))
        assert sorted(after) == [3, 6, 12]
        for i, (mtime, data) in earlier.items():  # neither lost nor rewritten (6 lies after the resumed checkpoint)
            assert after[i].stat().st_mtime_ns == mtime and after[i].read_bytes() == data
        a, b = load_snapshots(straight.snapshots), load_snapshots(out.snapshots)
        assert [e["iteration"] for e in b] == [3, 6, 12]
        for x, y in zip(a, b):  # bit-identical to the run that never stopped, snapshot by snapshot
            assert_same_state(x["state_dict"], y["state_dict"])
        assert_same_state(weights(straight.generator), weights(out.generator))


def test_a_fresh_start_deletes_stale_snapshots(tmp_path, make_shard, tiny_settings):
    shard = make_shard(label=2)
    out = outputs(tmp_path)
    train_label(
        shard, "wcgan", tiny_settings, Budget(iterations=8, checkpoint_every=4, snapshots=[0.5]), 0, out, threads=1
    )
    assert taken(out) == [4]
    changed = dict(tiny_settings, lr=5e-4)  # other settings: the checkpoints and snapshots are stale
    result = train_label(
        shard, "wcgan", changed, Budget(iterations=8, checkpoint_every=4, snapshots=[0.25]), 0, out, threads=1
    )
    assert result.resumed_from == 0 and taken(out) == [2]
    assert [e["iteration"] for e in load_snapshots(out.snapshots)] == [2]


@pytest.mark.parametrize("kind", ["one-label", "packed"])
def test_snapshots_configured_after_training_retrain_from_the_start(tmp_path, job, tiny_settings, kind, caplog):
    caplog.set_level("INFO", logger="labelwise.train")
    j = job(kind)
    j.train(tmp_path, Budget(iterations=8, checkpoint_every=4), tiny_settings)
    plain = [weights(o.generator) for o in j.outputs(tmp_path)]
    # The point at the final checkpoint is taken from it, without training.
    results = j.train(
        tmp_path, Budget(iterations=8, checkpoint_every=4, snapshots=[1.0]), tiny_settings, snapshots=True
    )
    assert {r.resumed_from for r in results} == {8} and {tuple(taken(o)) for o in j.outputs(tmp_path)} == {(8,)}
    # A point inside the trained part can only be taken by training again (all members: they advance
    # together), to the same weights.
    results = j.train(
        tmp_path, Budget(iterations=8, checkpoint_every=4, snapshots=[0.5, 1.0]), tiny_settings, snapshots=True
    )
    assert {r.resumed_from for r in results} == {0} and "never taken" in caplog.text
    for out, before in zip(j.outputs(tmp_path), plain):
        assert taken(out) == [4, 8]
        assert_same_state(weights(out.generator), before)


def test_a_minutes_budget_bundles_only_the_snapshots_reached(tmp_path, make_shard, tiny_settings):
    out = outputs(tmp_path)
    budget = Budget(iterations=10**6, minutes=0.01, snapshots=[1e-6, 1.0])  # iterations 1 and 10**6
    result = train_label(make_shard(), "wcgan", tiny_settings, budget, 0, out, threads=1)
    assert result.stopped_by == "minutes"
    assert [e["iteration"] for e in load_snapshots(out.snapshots)] == [1]


@pytest.mark.parametrize("fractions", [[0.5, 1.0], [0.5]], ids=["last-snapshot-at-the-end", "no-snapshot-at-the-end"])
def test_fid_along_training_ends_with_the_final_evaluation(tmp_path, make_shard, tiny_settings, fractions):
    from labelwise.metrics import evaluate_model, train_classifier
    from labelwise.metrics.snapshots import add_end_of_training, snapshot_metrics, write_snapshot_metrics
    from labelwise.plots import fid_vs_time, stability_figure
    from labelwise.sample import sample_label

    labels = (0, 7)
    shards = {k: make_shard(label=k, n=20) for k in labels}
    clf = tmp_path / "classifier.pt"
    train_classifier(shards, clf, epochs=1, seed=0, device="cpu")
    settings = {"inception": "off"}
    runs = []
    for model in ("wcgan", "cgan"):
        budget = Budget(iterations=4, checkpoint_every=2, snapshots=fractions)
        if model == "cgan":
            out = outputs(tmp_path / model)
            train_label(list(shards.values()), model, tiny_settings, budget, 0, out, threads=1)
            bundles = dict.fromkeys(labels, out.snapshots)
            generators = dict.fromkeys(labels, out.generator)
            logs = [out.log]
        else:
            bundles, generators, logs = {}, {}, []
            for k in labels:
                out = outputs(tmp_path / model / str(k))
                train_label(shards[k], model, tiny_settings, budget, 0, out, threads=1)
                bundles[k], generators[k] = out.snapshots, out.generator
                logs.append(out.log)
        samples = {k: tmp_path / model / f"samples{k}.h5" for k in labels}
        for k in labels:
            sample_label(generators[k], samples[k], 6, 0, label=k, device="cpu")
        final = evaluate_model(
            model, samples, shards, stats_dir=tmp_path / "stats", classifier_path=clf, settings=settings, device="cpu"
        )
        curve = snapshot_metrics(
            model,
            bundles,
            shards,
            stats_dir=tmp_path / "stats",
            classifier_path=clf,
            samples_per_label=6,
            seed=0,
            settings=settings,
            device="cpu",
        )
        assert [p["iteration"] for p in curve["points"]] == [2, 4][: len(fractions)]
        add_end_of_training(curve, final, logs)
        end = curve["end"]
        assert end["iterations_per_label"] == {"0": 4, "7": 4}
        assert end["elapsed_seconds"] > curve["points"][0]["elapsed_seconds"]
        # The end is the final evaluation; a snapshot at the end is the same generator, so the same FID.
        assert end["classifier"]["fid"]["pooled"] == final["classifier"]["fid"]["pooled"]
        assert end["classifier"]["fid"]["intra_fid"] == final["classifier"]["fid"]["intra_fid"]
        if fractions[-1] == 1.0:
            last = curve["points"][-1]
            assert last["classifier"]["fid"] == {k: end["classifier"]["fid"][k] for k in last["classifier"]["fid"]}
            assert last["elapsed_seconds"] == pytest.approx(end["elapsed_seconds"], abs=1e-3)  # the log rounds to ms
        assert curve["inception"]["status"] == "skipped" and "inception" not in curve["points"][0]
        # Stability: how far above the best FID along training (snapshots and end) the final one lies.
        fids = [p["classifier"]["fid"]["pooled"] for p in curve["points"]] + [end["classifier"]["fid"]["pooled"]]
        gap = curve["stability"]["classifier"]
        assert gap["final_fid"] == final["classifier"]["fid"]["pooled"] and gap["best_fid"] == min(fids)
        assert gap["final_minus_best"] == gap["final_fid"] - min(fids) >= 0 and gap["points"] == len(fids)
        write_snapshot_metrics(curve, tmp_path / f"{model}.json", tmp_path / f"{model}.csv")
        runs.append(tmp_path / f"{model}.json")
        rows = (tmp_path / f"{model}.csv").read_text().splitlines()
        assert rows[0].startswith("point,iteration,fraction,elapsed_seconds,classifier_fid")
        assert [r.split(",")[:3] for r in rows[1:]] == [["snapshot", "2", "0.5"], ["snapshot", "4", "1.0"]][
            : len(fractions)
        ] + [["end", "4", ""]]
        # An evaluation of other sample counts is not this curve's end.
        other = json.loads(json.dumps(final))
        other["protocol"]["n_generated"] = {"0": 5, "7": 6}
        with pytest.raises(LabelwiseError, match="rerun the evaluate stage"):
            add_end_of_training(curve, other, logs)
    fid_vs_time(runs, [tmp_path / "fig.png"])
    assert (tmp_path / "fig.png").stat().st_size > 1000
    stability_figure({"toy": runs + runs}, [tmp_path / "stability.png", tmp_path / "stability.pdf"])  # two "seeds"
    assert (tmp_path / "stability.png").stat().st_size > 1000 and (tmp_path / "stability.pdf").is_file()


# ------------------------------------------------------------------------------------- pipeline


@pytest.mark.e2e
def test_pipeline_draws_fid_against_training_time(tmp_path):
    config = dict(
        TINY,
        models={"wcgan": TINY["models"]["wcgan"], "cgan": TINY["models"]["wcgan"], "cdcgan": TINY["models"]["dccgan"]},
        budget={**TINY["budget"], "snapshots": [0.5]},
        evaluation={**TINY["evaluation"], "classifier_epochs": 1},
    )
    plan = snakemake(tmp_path, config, "--dry-run", "paper")
    assert plan.returncode == 0, plan.stderr[-3000:]
    assert "rule fid_vs_time_figure:" in plan.stdout and "snapshots/all.pt" in plan.stdout
    assert "rule stability_figure:" in plan.stdout
    figures = [
        f"results/mnist5k/figures/{name}.{ext}" for name in ("fid_vs_time", "stability") for ext in ("png", "pdf")
    ]
    result = snakemake(tmp_path, config, *figures)
    assert result.returncode == 0, result.stderr[-3000:]
    ds = tmp_path / "results" / "mnist5k"
    for model, iterations in (("wcgan", 6), ("cgan", 12), ("cdcgan", 12)):  # conditional: the labels' sum
        curve = json.loads((ds / model / "fid_vs_time.json").read_text())
        assert [(p["iteration"], p["fraction"]) for p in curve["points"]] == [(iterations // 2, 0.5)]
        # No snapshot at the end: the curve still ends there, with the final generators' FID.
        metrics = json.loads((ds / model / "metrics.json").read_text())
        assert set(curve["end"]["iterations_per_label"].values()) == {iterations}
        assert curve["end"]["classifier"]["fid"]["pooled"] == metrics["classifier"]["fid"]["pooled"] > 0
        assert curve["points"][0]["elapsed_seconds"] < curve["end"]["elapsed_seconds"]
        assert len((ds / model / "fid_vs_time.csv").read_text().splitlines()) == 3
        assert metrics["protocol"]["n_generated"] == {"0": 5, "7": 5}  # sampled and evaluated per label
    for label in (0, 7):
        assert len(torch.load(ds / "wcgan" / "snapshots" / f"{label}.pt", weights_only=True)["snapshots"]) == 1
    for path in figures:
        assert (tmp_path / path).stat().st_size > 1000
