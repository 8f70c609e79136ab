"""config.yaml's demo and the paper presets as their training jobs receive them (read from the
dry-run plan, not from the files): each file's budget and model settings, the iterations per label
the README states; `labelwise <stage> --config` composing files as Snakemake does; the presets'
DAGs (ImageNet-1k: 1,000 labels)."""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from conftest import REPO, snakemake_command, snakemake_env
from hypothesis import given, settings
from hypothesis import strategies as st
from snakemake.utils import update_config

import labelwise.train
from labelwise import cli, models
from labelwise.config import load_config, load_schema, merge_config
from labelwise.data import num_classes
from labelwise.data.sources import CIFAR_SIDE, MNIST_SIDE
from labelwise.nets import network_resolution
from labelwise.train import Budget
from labelwise.train.compute import label_iteration_flops, plan_iterations

DEMO = REPO / "config.yaml"
PRESETS = sorted((REPO / "presets").glob("*.yaml"))
CONFIGS = [DEMO, *PRESETS]
IMAGEFOLDER_CLASSES = {"imagenet1k": 1000}  # class folders of the stand-in data root, per preset


def image_shape(data: dict) -> tuple[int, int]:
    """(channels, network resolution) of a source's images, known without its data (MNIST's 28 px
    padded to 32, CIFAR's 32, an image folder's data.resolution): what the FLOPs are counted on."""
    channels, side = {"mnist5k": (1, MNIST_SIDE), "cifar10": (3, CIFAR_SIDE), "cifar100": (3, CIFAR_SIDE)}.get(
        data["source"], (3, data["resolution"])
    )
    return channels, network_resolution(side)


def train_commands(output: str) -> list[list[str]]:
    """The `labelwise train ...` commands of a `--printshellcmds` dry run, as argument lists (from
    `train`, the log redirection cut off)."""
    commands = []
    for line in output.splitlines():
        if "labelwise train " in line:
            tokens = shlex.split(line[line.index("labelwise train ") :])
            commands.append(tokens[1 : tokens.index("2>")] if "2>" in tokens else tokens[1:])
    return commands


def option(tokens: list[str], name: str) -> list[str]:
    """The values that follow option `name` in `tokens`, up to the next option."""
    i = tokens.index(name) + 1
    j = next((k for k in range(i, len(tokens)) if tokens[k].startswith("--")), len(tokens))
    return tokens[i:j]


def dry_run(workdir: Path, configfiles: list[Path]) -> str:
    """The Snakefile's dry-run plan with its shell commands, in `workdir`; no files: its config.yaml."""
    result = subprocess.run(
        snakemake_command(workdir, configfiles, "--dry-run", "--printshellcmds"),
        capture_output=True,
        text=True,
        env=snakemake_env(),
        timeout=600,
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    return result.stdout


@pytest.fixture(scope="module")
def planned(tmp_path_factory):
    """config file -> its dry-run plan, made once per file, in a folder holding config.yaml as a
    checkout does. config.yaml is run as the file Snakemake reads when no --configfile is given; a
    preset as `--configfile <preset>` (its own relative data.root; an image folder's stand-in: empty
    class folders)."""
    plans = {}

    def plan(config: Path) -> str:
        if config not in plans:
            workdir = tmp_path_factory.mktemp(config.stem)
            raw = yaml.safe_load(config.read_text())
            if raw["data"]["source"] == "imagefolder":
                for i in range(IMAGEFOLDER_CLASSES[config.stem]):
                    (workdir / raw["data"]["root"] / f"n{i:08d}").mkdir(parents=True)
            shutil.copy(DEMO, workdir / "config.yaml")  # beside every run, as in a checkout: it must not leak
            plans[config] = dry_run(workdir, [] if config == DEMO else [config])
        return plans[config]

    return plan


def labels_of(config: Path) -> list[int]:
    """Every label of the file's dataset (each of them `data.labels: all`)."""
    data = yaml.safe_load(config.read_text())["data"]
    assert data.get("labels", "all") == "all"
    source = data.get("source", "mnist5k")
    return list(range(IMAGEFOLDER_CLASSES[config.stem] if source == "imagefolder" else num_classes(source, None)))


def readme_rows() -> dict[str, dict[str, str]]:
    """README's table of what the training jobs receive: configuration file -> column -> cell."""
    lines = (REPO / "README.md").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| configuration | width |"))
    header = [c.strip() for c in lines[start].strip("|").split("|")]
    rows = {}
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        cells = dict(zip(header, (c.strip() for c in line.strip("|").split("|"))))
        rows[re.match(r"`([^`]+)`", cells["configuration"]).group(1)] = cells
    return rows


def per_model(cell: str, index: int) -> str:
    """A README cell's value for the model at `index` (W-CGAN / DC-CGAN), or its one value for both."""
    parts = [p.strip() for p in cell.split(" / ")]
    return parts[index] if len(parts) > 1 else parts[0]


def test_every_paper_dataset_has_a_preset():
    assert {p.stem for p in PRESETS} >= {"mnist", "cifar10", "cifar100", "imagenet1k"}


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.stem)
def test_train_jobs_receive_what_the_file_and_readme_state(config, planned):
    """Every training job of `config` gets the file's budget and model settings as written (none of
    another file's), and the iterations per label, width, augmentation and EMA of the README's table."""
    written = yaml.safe_load(config.read_text())
    composed = load_config(config)
    readme = readme_rows()[config.relative_to(REPO).as_posix()]
    schema = load_schema()
    if config != DEMO:  # a preset states its whole budget and every model setting it relies on
        assert set(written["budget"]) == set(schema["properties"]["budget"]["properties"]), config.name
        for model, section in written["models"].items():
            own = schema["properties"]["models"]["properties"][model]["properties"]
            keys = {*own, *schema["$defs"]["gan"]["properties"]}
            if section["augment"] == "none":
                keys.discard("augment_policy")  # not used without augmentation
            assert set(section) == keys, (config.name, model)
    jobs = train_commands(planned(config))
    for index, model in enumerate(models.ordered(composed["models"])):
        commands = [c for c in jobs if option(c, "--model") == [model]]
        assert sorted(int(k) for c in commands for k in option(c, "--label")) == labels_of(config)
        received = {option(c, "--settings")[0] for c in commands}
        assert len(received) == 1, f"{config.name}: the {model} jobs get different settings"
        job = json.loads(received.pop())
        # The file's budget and the file's model settings, as written (a null gflop and no snapshots
        # leave the job's settings, as before those keys existed: labelwise.plan.train_settings).
        unset = {"gflop": None, "snapshots": []}
        assert job["budget"] == {k: v for k, v in written["budget"].items() if unset.get(k, ()) != v}
        assert {k: job["model"][k] for k in written["models"][model]} == written["models"][model]
        # What the README states for this model, after the compute budget is resolved.
        plan = plan_iterations(
            Budget(**job["budget"]), label_iteration_flops(model, job["model"], *image_shape(composed["data"]))
        )
        short = models.title(model).split(" (")[0]
        assert plan.budget.iterations == int(readme[f"{short} iterations / label"].replace(",", "")), short
        assert readme["set by"].startswith(f"`budget.{plan.set_by}`"), short
        assert per_model(readme["width"], index) == str(job["model"]["width"])
        augment = job["model"]["augment"]
        if augment == "diffaugment":
            augment += f" [{', '.join(job['model']['augment_policy'])}]"
        assert per_model(readme["augment"], index) == augment
        assert per_model(readme["EMA"], index) == (
            "none" if job["model"]["ema"] is None else f"{job['model']['ema']:g}"
        )


@pytest.mark.parametrize("config", PRESETS, ids=lambda p: p.stem)
def test_preset_jobs_pack_labels_per_job(config, planned):
    """runtime.labels_per_job K (40): one training job per model and pack of K labels in order, none
    per label (CIFAR-10: its 10 labels in one job)."""
    composed = load_config(config)
    k, labels = composed["runtime"]["labels_per_job"], labels_of(config)
    jobs = train_commands(planned(config))
    for model in composed["models"]:
        packs = sorted([int(x) for x in option(c, "--label")] for c in jobs if option(c, "--model") == [model])
        assert packs == [labels[i : i + k] for i in range(0, len(labels), k)], (config.name, model)


def test_imagenet1k_preset_builds_a_1000_label_dag(planned):
    output = planned(REPO / "presets" / "imagenet1k.yaml")
    table = output[output.index("Job stats:") :].split("\n\n")[0].splitlines()
    rows = {line.split()[0]: line.split()[1] for line in table if len(line.split()) == 2}
    # labels_per_job 40: 25 packed training jobs per model, one sampling job per model
    packs = {rule: int(n) for rule, n in rows.items() if rule.startswith("train_labels_")}
    assert len(packs) == 25 and sum(packs.values()) == 50 and "train_labels_960_999" in packs
    assert rows.get("sample") == "2"  # sampling: one job per model
    assert rows.get("prepare_label") == "1000" and rows.get("prepare") == "1"  # one data job per label, one meta.json


# Nested config mappings as YAML files hold them: section and key names, scalars, lists.
CONFIG_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 3) | st.sampled_from(["a", "b"]) | st.lists(st.integers(0, 3)),
    lambda inner: st.dictionaries(st.sampled_from(["x", "y", "z"]), inner, max_size=3),
    max_leaves=8,
)


@settings(max_examples=200, deadline=None)
@given(
    base=st.dictionaries(st.sampled_from(["x", "y"]), CONFIG_VALUES),
    overlay=st.dictionaries(st.sampled_from(["x", "y"]), CONFIG_VALUES),
)
def test_config_files_merge_as_snakemake_merges_them(base, overlay):
    """`labelwise <stage> --config a b` lays b over a with Snakemake's own rule for --configfile a b."""
    ours, theirs = copy.deepcopy(base), copy.deepcopy(base)
    update_config(theirs, copy.deepcopy(overlay))
    assert merge_config(ours, overlay) == theirs


def plain(value):
    """A training call's argument, comparable between the two ways of starting it: paths absolute."""
    if isinstance(value, Path):
        return os.path.abspath(value)
    if dataclasses.is_dataclass(value):
        return plain(dataclasses.asdict(value))
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


@pytest.mark.parametrize(
    "files",
    [
        [{"models": {"wcgan": {"width": 8}}, "data": {"labels": [0, 7]}}],
        ["presets/mnist.yaml", {"data": {"labels": [2, 3]}, "runtime": {"channels_last": True}}],
    ],
    ids=["a-partial-file-alone", "a-preset-then-a-file-of-ones-own"],
)
def test_labelwise_train_and_snakemake_give_a_job_the_same_training(tmp_path, monkeypatch, files):
    """`labelwise train --config X...` and the Snakemake job of `--configfile X...` make the same call
    of the training function: same settings, budget, seed, labels, files and runtime options."""
    shutil.copy(DEMO, tmp_path / "config.yaml")  # where Snakemake runs, as in a checkout: it must not leak
    paths = []
    for i, f in enumerate(files):
        if isinstance(f, dict):
            (tmp_path / f"own{i}.yaml").write_text(yaml.safe_dump(f))
            f = tmp_path / f"own{i}.yaml"
        paths.append(REPO / f if isinstance(f, str) else f)
    commands = train_commands(dry_run(tmp_path, paths))
    assert commands
    calls = []

    def recorder(name):
        def record(shards, *args, **kwargs):
            shards = [Path(s) for s in shards] if isinstance(shards, list) else Path(shards)
            calls.append((name, plain(shards), plain(args), plain(kwargs)))

        return record

    monkeypatch.setattr(labelwise.train, "train_job", recorder("train_job"))
    monkeypatch.chdir(tmp_path)  # where Snakemake ran the jobs: their relative paths
    for tokens in commands:
        assert cli.main(tokens) == 0
        by_snakemake = calls.pop()
        by_hand = ["train", "--config", *map(str, paths), "--model", *option(tokens, "--model")]
        assert cli.main([*by_hand, "--label", *option(tokens, "--label")]) == 0
        assert calls.pop() == by_snakemake
