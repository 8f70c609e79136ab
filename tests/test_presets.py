"""The paper presets: valid over config.yaml, and their DAGs build (ImageNet-1k: 1,000 labels)."""

from __future__ import annotations

import copy
import re

import pytest
import yaml
from conftest import REPO, SHARED_DATA
from test_pipeline import snakemake

from labelwise.config import validate_config

PRESETS = sorted((REPO / "presets").glob("*.yaml"))


def merged(preset) -> dict:
    """config.yaml updated by the preset, recursively, as `snakemake --configfile` does."""

    def update(base, new):
        for key, value in new.items():
            if isinstance(value, dict) and isinstance(base.get(key), dict):
                update(base[key], value)
            else:
                base[key] = copy.deepcopy(value)
        return base

    return update(yaml.safe_load((REPO / "config.yaml").read_text()), yaml.safe_load(preset.read_text()))


def test_every_paper_dataset_has_a_preset():
    assert {p.stem for p in PRESETS} >= {"mnist", "cifar10", "cifar100", "imagenet1k"}


@pytest.mark.parametrize("preset", PRESETS, ids=lambda p: p.stem)
def test_preset_is_valid_and_sized_for_a_gpu(preset):
    config = validate_config(merged(preset))
    assert config["budget"]["minutes"] != 3, "the CPU demo's 3-minute cap must not leak into a preset"
    for settings in config["models"].values():
        assert settings["width"] == 64


def test_cifar10_preset_dry_runs_on_the_mini_copy(tmp_path):
    mini = SHARED_DATA / "cifar10-mini"
    if not mini.is_dir():
        pytest.skip(f"{mini} is absent (the shared mini CIFAR-10 copy lives beside the repository)")
    config = merged(REPO / "presets" / "cifar10.yaml")
    config["data"]["root"] = str(mini)
    result = snakemake(tmp_path, config, "--dry-run")
    assert result.returncode == 0, result.stderr[-2000:]
    # labels_per_job 40: the 10 labels in one packed job per model
    assert re.search(r"^train_labels_0_9\s+2$", result.stdout, flags=re.M), result.stdout[-2000:]
    assert not re.search(r"^train\s+\d+$", result.stdout, flags=re.M)  # no one-label jobs


def test_imagenet1k_preset_builds_a_1000_label_dag(tmp_path):
    root = tmp_path / "train"
    for i in range(1000):
        (root / f"n{i:08d}").mkdir(parents=True)
    config = merged(REPO / "presets" / "imagenet1k.yaml")
    config["data"]["root"] = str(root)
    result = snakemake(tmp_path, config, "--dry-run", "--quiet", "rules")
    assert result.returncode == 0, result.stderr[-2000:]
    rows = {line.split()[0]: line.split()[1] for line in result.stdout.splitlines() if len(line.split()) == 2}
    # labels_per_job 40: 25 packed training jobs per model, one sampling job per model
    packs = {rule: int(n) for rule, n in rows.items() if rule.startswith("train_labels_")}
    assert len(packs) == 25 and sum(packs.values()) == 50 and "train_labels_960_999" in packs
    assert rows.get("sample") == "2"  # sampling: one job per model
    assert rows.get("prepare_label") == "1000" and rows.get("prepare") == "1"  # one data job per label, one meta.json
