"""Numbers are finite (issue 23 point 3): JSON Schema's minimum and maximum let NaN through (every
comparison with NaN is false), so `.nan` for budget.gflop, lr, betas, gp_lambda, minutes or
progress_seconds used to pass validation and end in tracebacks at training, a misleading "diverged"
for gp_lambda, or silent acceptance.  `labelwise.config.check_numbers` refuses NaN and ±inf for every
key, in one line naming it.  The keys tried are every numeric key of the schema, read from the
schema itself, so a key added later is covered (docs/faults.md, "Configuration").
"""

from __future__ import annotations

import json
import subprocess

import pytest
import yaml
from conftest import snakemake_command, snakemake_env

from labelwise.config import check_train_settings, load_config, load_schema
from labelwise.errors import LabelwiseError

pytestmark = pytest.mark.faults


def numeric_keys(schema: dict) -> list[tuple]:
    """Every path of the schema whose value is (or holds) a number: ("models", "wcgan", "lr"), and
    ("models", "wcgan", "betas", 1) for a number inside a list (the item a list of two needs)."""

    def types(node) -> set:
        kind = node.get("type", [])
        return set([kind] if isinstance(kind, str) else kind)

    def walk(node: dict, path: tuple):
        for part in node.get("allOf", []):
            yield from walk(schema["$defs"]["gan"] if "$ref" in part else part, path)
        for branch in node.get("oneOf", []):
            yield from walk(branch, path)
        if types(node) & {"number", "integer"}:
            yield path
        if "items" in node:
            index = max(0, node.get("minItems", 1) - 1)
            yield from walk(node["items"], (*path, index))
        for key, sub in node.get("properties", {}).items():
            yield from walk(sub, (*path, key))

    return sorted(set(walk(schema, ())), key=str)


KEYS = numeric_keys(load_schema())


def test_the_schema_walk_finds_the_keys_of_the_issue():
    names = {".".join(map(str, k)) for k in KEYS}
    issue = {"budget.gflop", "models.wcgan.lr", "models.wcgan.betas.1", "models.wcgan.gp_lambda", "budget.minutes"}
    assert issue | {"runtime.progress_seconds", "seed", "data.labels.0"} <= names
    assert {"models.dccgan.width", "models.cgan.gp_lambda", "evaluation.samples_per_label"} <= names
    assert len(KEYS) >= 50  # every model's settings, the budget, evaluation, figures, runtime, scaling


def _config_with(path: tuple, value) -> dict:
    """A config whose only unusual value is `value` at `path` (a list key gets a list of valid items)."""
    config: dict = {}
    node = config
    for key, following in zip(path, path[1:]):
        if isinstance(following, int):
            node[key] = [0.5] * (following + 1)
        else:
            node = node.setdefault(key, {})
            continue
        node = node[key]
    node[path[-1]] = value
    return config


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")], ids=["nan", "inf", "-inf"])
@pytest.mark.parametrize("path", KEYS, ids=lambda p: ".".join(map(str, p)))
def test_nan_and_infinity_are_refused_for_every_numeric_key(tmp_path, path, value):
    config = tmp_path / "config.yaml"
    text = yaml.safe_dump(_config_with(path, value))
    assert (".nan" if value != value else ".inf") in text  # typed as YAML spells them
    config.write_text(text)
    with pytest.raises(LabelwiseError) as err:
        load_config(config)
    key = ".".join(map(str, path))
    assert str(err.value) == f"config key {key}: {value} is not a finite number; give a number"


def test_nan_from_snakemake_is_one_line_before_any_job(tmp_path):
    """A config file's `.nan` and a `--config` NaN (Snakemake reads `seed=nan` as a float), through
    the Snakefile: one line naming the key.  Before: gp_lambda NaN trained and reported "diverged…
    lower lr"; minutes NaN was accepted silently."""
    for text, extra in (("models:\n  wcgan: {width: 4, gp_lambda: .nan}\n", []), ("{}\n", ["--config", "seed=-inf"])):
        (tmp_path / "user.yaml").write_text(text)
        cmd = snakemake_command(tmp_path, tmp_path / "user.yaml", "-n", *extra, cores=1)
        result = subprocess.run(cmd, capture_output=True, text=True, env=snakemake_env(), timeout=300)
        lines = [line for line in result.stderr.splitlines() if line.startswith("labelwise: config error:")]
        assert result.returncode != 0 and len(lines) == 1 and "Traceback" not in result.stderr, result.stderr[-2000:]
        key, value = ("seed", "-inf") if extra else ("models.wcgan.gp_lambda", "nan")
        assert lines[0] == f"labelwise: config error: config key {key}: {value} is not a finite number; give a number"
    assert not (tmp_path / "results").exists()


def test_nan_in_train_settings_is_refused(tmp_path):
    """`labelwise train --settings` (the rule's JSON, which Python's json reads NaN and Infinity in)."""
    text = json.dumps({"model": {"width": 4, "gp_lambda": float("nan")}, "budget": {"iterations": 2}, "seed": 0})
    with pytest.raises(LabelwiseError, match=r"^train --settings: key model.gp_lambda: nan is not a finite number"):
        check_train_settings(text, "wcgan")
