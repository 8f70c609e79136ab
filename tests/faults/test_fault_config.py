"""Configuration faults the brief adds to tests/test_pipeline.py::test_bad_config_fails_before_any_job
(unknown model, out-of-range values, a wrong type, labels that do not exist, a missing data root):
unknown keys at the top level and nested, and a wrong type for data.labels.  Each stops the real
Snakefile before any job runs, with one line naming the key."""

from __future__ import annotations

import pytest
from conftest import TINY, snakemake

pytestmark = pytest.mark.faults


@pytest.mark.parametrize(
    "change, says",
    [
        ({"sead": 3}, "config key top level: unknown key 'sead'; allowed keys: budget, data"),
        (
            {"budget": {"iteratons": 5}},
            "config key budget: unknown key 'iteratons'; allowed keys: checkpoint_every, gflop, iterations",
        ),
        (
            {"models": {"wcgan": {"widht": 4}}},
            "config key models.wcgan: unknown key 'widht'; allowed keys: augment, augment_policy, batch_size",
        ),
        (
            {"data": {"source": "mnist5k", "labels": "3"}},
            "config key data.labels: '3' is not valid; 'all' or a list of label indices",
        ),
        ({"data": {"source": "mnist5k", "labels": [1, "x"]}}, "config key data.labels.1: 'x' is not of type 'integer'"),
    ],
    ids=["unknown-top-level-key", "unknown-nested-key", "unknown-model-key", "labels-a-string", "label-not-an-int"],
)
def test_bad_config_stops_before_any_job_naming_the_key(tmp_path, change, says):
    result = snakemake(tmp_path, dict(TINY, **change), "--dry-run")
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.startswith("labelwise: config error:")]
    assert len(lines) == 1 and says in lines[0], result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "results").exists() and not (tmp_path / "logs").exists()


def test_nested_command_line_values_get_their_yaml_types(tmp_path):
    """Snakemake reads `--config key='{...}'` with YAML's BaseLoader (every nested scalar a string):
    numbers, booleans and null the schema needs are read as such, and reach the jobs typed."""
    result = snakemake(
        tmp_path,
        TINY,
        "--dry-run",
        "-p",
        "--config",
        "models={wcgan: {width: 8, lr: 2.0e-4}}",
        "budget={snapshots: [0.5], minutes: null}",
        "data={source: mnist5k, labels: [0, 7]}",
        "runtime={channels_last: true}",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert '"lr": 0.0002,' in result.stdout and '"width": 8}' in result.stdout  # numbers, not '0.0002' and '8'
    assert '"snapshots": [0.5]' in result.stdout and '"minutes": null' in result.stdout
    assert "--channels-last True" in result.stdout  # a boolean, not the string 'true'
    # What YAML cannot make valid is still refused, naming the key.
    bad = snakemake(tmp_path, TINY, "--dry-run", "--config", "models={wcgan: {width: eight}}")
    assert bad.returncode != 0
    assert "labelwise: config error: config key models.wcgan.width: 'eight' is not of type 'integer'" in bad.stderr
    # A number of the right type but out of range is reported as such, not as a string.
    low = snakemake(tmp_path, TINY, "--dry-run", "--config", "budget={iterations: -5}")
    assert low.returncode != 0
    assert "labelwise: config error: config key budget.iterations: -5 is less than the minimum of 1" in low.stderr
