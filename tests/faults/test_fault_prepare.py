"""A data stage that stopped part-way (disk full after seven shards) leaves shards that nothing trusts:
training, the label classifier and the real statistics each stop with one line naming the shard and
saying to rerun the data stage, and write nothing (docs/faults.md, "Shards").
"""

from __future__ import annotations

import errno
import subprocess
import sys

import pytest
import yaml

import labelwise.images
import labelwise.io
from labelwise.data import prepare_dataset, read_shard
from labelwise.errors import LabelwiseError
from labelwise.metrics.classifier import train_classifier

pytestmark = pytest.mark.faults

WRITTEN = 7  # shards 0-6 are written, the eighth write finds the disk full


@pytest.fixture
def interrupted(tmp_path, monkeypatch):
    """results/mnist5k as a full disk leaves it: shards 0-6 complete, no shard 7-9, no meta.json."""
    out = tmp_path / "results" / "mnist5k"
    real_write, calls = labelwise.images.write_bytes, []

    def filling_up(path, data):
        calls.append(path)
        if len(calls) > WRITTEN:  # what labelwise.io reports for a full disk
            raise LabelwiseError(labelwise.io.write_failure(path, OSError(errno.ENOSPC, "No space left on device")))
        real_write(path, data)

    monkeypatch.setattr(labelwise.images, "write_bytes", filling_up)
    with pytest.raises(LabelwiseError, match=r"shards/7\.h5: could not write it \(No space left on device\)"):
        prepare_dataset("mnist5k", out)
    monkeypatch.undo()
    assert sorted(p.name for p in (out / "shards").glob("*.h5")) == [f"{k}.h5" for k in range(WRITTEN)]
    assert not (out / "meta.json").exists()
    return out


def test_train_refuses_the_shards_of_an_interrupted_preparation(tmp_path, interrupted):
    config = tmp_path / "config.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "data": {"source": "mnist5k"},
                "models": {"wcgan": {"width": 4, "latent_dim": 8, "batch_size": 8}},
                "budget": {"iterations": 2, "checkpoint_every": 1},
                "runtime": {"device": "cpu"},
            }
        )
    )
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "labelwise.cli",
            "train",
            "--config",
            str(config),
            "--results",
            str(tmp_path / "results"),
            "--model",
            "wcgan",
            "--label",
            "0",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 1, result.stderr[-3000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and " ERROR " in lines[0] and "Traceback" not in result.stderr, result.stderr[-3000:]
    shard = interrupted / "shards" / "0.h5"
    assert f"{shard}: not trusted, the data stage that wrote it did not complete" in lines[0]
    assert "meta.json is missing" in lines[0] and "rerun the data stage" in lines[0]
    assert not (interrupted / "wcgan").exists()  # no generator, log or checkpoint folder


def test_classifier_and_real_stats_refuse_them_too(tmp_path, interrupted):
    from labelwise.metrics.realstats import compute_real_stats

    shards = {k: interrupted / "shards" / f"{k}.h5" for k in range(WRITTEN)}
    with pytest.raises(LabelwiseError, match=r"shards/0\.h5: not trusted.*rerun the data stage"):
        train_classifier(shards, tmp_path / "classifier.pt", epochs=1, seed=0, device="cpu")
    assert not (tmp_path / "classifier.pt").exists()
    with pytest.raises(LabelwiseError, match=r"shards/3\.h5: not trusted.*rerun the data stage"):
        compute_real_stats(shards[3], space=None)


def test_rerun_of_the_data_stage_makes_them_trusted(interrupted):
    prepare_dataset("mnist5k", interrupted)
    images, _ = read_shard(interrupted / "meta.json", 0)
    assert len(images) == 500
