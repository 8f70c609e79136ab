"""The model registry (labelwise/models.py) is the one place a model is named: no other pipeline file
spells a model name, and a model registered through LABELWISE_MODEL_PLUGINS is planned by the pipeline
like the built-in ones."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import REPO, checkout, snakemake_env

from labelwise import config as lw_config
from labelwise import models
from labelwise.errors import LabelwiseError

# The pipeline's code; config.yaml, presets, tests, benchmarks and docs use models, so they may name them.
SCANNED = ("labelwise", "rules", "Snakefile", "workflow/scripts")
ALLOWED = {REPO / "labelwise" / "models.py", REPO / "labelwise" / "schemas" / "config.schema.yaml"}


def pipeline_files() -> list[Path]:
    files = []
    for name in SCANNED:
        path = REPO / name
        files += (
            [path] if path.is_file() else [p for p in sorted(path.rglob("*")) if p.suffix in (".py", ".smk", ".yaml")]
        )
    return [f for f in files if f not in ALLOWED and "__pycache__" not in f.parts]


def test_no_pipeline_file_spells_a_model_name():
    quoted = re.compile(r"""["'](""" + "|".join(map(re.escape, models.names())) + r""")["']""")
    found = [
        f"{f.relative_to(REPO)}:{n}: {line.strip()}"
        for f in pipeline_files()
        for n, line in enumerate(f.read_text().splitlines(), 1)
        if quoted.search(line)
    ]
    assert not found, "model names belong in labelwise/models.py only:\n" + "\n".join(found)


def test_the_schema_names_only_registered_models_and_every_one_gets_a_settings_section():
    in_file = yaml.safe_load(lw_config.SCHEMA_PATH.read_text())["properties"]["models"]["properties"]
    assert set(in_file) <= set(models.names())
    sections = lw_config.load_schema()["properties"]["models"]["properties"]
    assert list(sections) == list(in_file) + [m for m in models.names() if m not in in_file]
    assert lw_config.schema_file() == str(lw_config.SCHEMA_PATH)  # the built-in models: the file itself


def test_registry_order_conditional_flag_and_unknown_names():
    assert models.ordered(["cdcgan", "cgan", "zzz", "dccgan", "wcgan"]) == ["wcgan", "dccgan", "cgan", "cdcgan", "zzz"]
    assert [m for m in models.names() if models.get(m).conditional] == ["cgan", "cdcgan"]
    assert models.file_names("cgan", [3, 4]) == [models.ALL] and models.file_names("wcgan", [3, 4]) == [3, 4]
    with pytest.raises(LabelwiseError, match="unknown model 'nope'; known models: wcgan, dccgan, cgan, cdcgan"):
        models.get("nope")


TOY_PLUGIN = """from labelwise.models import Model, register

register(Model("toy", "Toy (per-label WGAN-GP)", "C5", loss="wgan-gp", settings="wcgan"))
"""


def test_a_model_registered_by_a_plugin_is_validated_and_its_jobs_are_planned(tmp_path):
    checkout(tmp_path)
    (tmp_path / "plugins").mkdir()
    (tmp_path / "plugins" / "toy_models.py").write_text(TOY_PLUGIN)
    env = dict(
        snakemake_env(),
        LABELWISE_MODEL_PLUGINS="toy_models",
        PYTHONPATH=os.pathsep.join([str(tmp_path / "plugins"), os.environ.get("PYTHONPATH", "")]),
    )
    # A setting only the schema section it borrows (wcgan's) allows: the toy is validated as that model.
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "snakemake",
            "-n",
            "--cores",
            "1",
            "--config",
            "models={toy: {gp_lambda: 5.0}}",
            "data={labels: [0, 1]}",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-3000:]
    # One block per job, cut at each "rule NAME:" line: a rule without wildcards must not borrow the next job's.
    blocks = re.split(r"^(?=(?:local)?rule \w+:$)", out, flags=re.M)
    planned = [
        (job.group(1), wildcards.group(1))
        for block in blocks
        if (job := re.match(r"(?:local)?rule (\w+):", block))
        and (wildcards := re.search(r"^\s+wildcards: (.*)$", block, flags=re.M))
    ]
    toy_jobs = sorted(rule for rule, wildcards in planned if "model=toy" in wildcards)
    # one training and one sampling job per label
    assert toy_jobs == ["evaluate", "sample", "sample", "sample_grid", "train", "train", "training_curves"], out[-3000:]
    # The same config without the plugin: the name is refused before any job.
    del env["LABELWISE_MODEL_PLUGINS"]
    refused = subprocess.run(
        [sys.executable, "-m", "snakemake", "-n", "--cores", "1", "--config", "models={toy: {}}"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert refused.returncode != 0 and "toy" in refused.stdout + refused.stderr
