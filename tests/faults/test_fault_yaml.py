"""YAML as users type it (issue 16 point 8, issue 14 point 6): `lr: 1e-4` is a number, an unquoted
`inception: off` means off, and a key given twice is refused, the same through the Snakefile
(config files, which Snakemake reads itself, and --config) and the `labelwise` command line."""

from __future__ import annotations

import subprocess
import textwrap
from pathlib import Path

import pytest
from conftest import snakemake_command, snakemake_env

from labelwise.config import load_config
from labelwise.errors import LabelwiseError

pytestmark = pytest.mark.faults

BASE = """\
data: {source: mnist5k, labels: [0, 7]}
models:
  wcgan: {width: 4, latent_dim: 8, batch_size: 8}
budget: {iterations: 6, checkpoint_every: 3}
evaluation: {samples_per_label: 5}
runtime: {device: cpu}
"""


def dry_run(workdir: Path, text: str, *args: str) -> subprocess.CompletedProcess:
    """`snakemake -n -p` with `text` as the one config file, written exactly as given."""
    (workdir / "user.yaml").write_text(textwrap.dedent(text))
    cmd = snakemake_command(workdir, workdir / "user.yaml", "-n", "-p", *args, cores=1)
    return subprocess.run(cmd, capture_output=True, text=True, env=snakemake_env(), timeout=300)


def config_error(result) -> str:
    lines = [line for line in result.stderr.splitlines() if line.startswith("labelwise: config error:")]
    assert result.returncode != 0 and len(lines) == 1 and "Traceback" not in result.stderr, result.stderr[-2000:]
    return lines[0]


def test_float_without_a_dot_is_a_number_in_config_files_and_on_the_command_line(tmp_path):
    text = BASE.replace("batch_size: 8}", "batch_size: 8, lr: 1e-4}")
    result = dry_run(tmp_path, text)
    assert result.returncode == 0, result.stderr[-2000:]
    assert '"lr": 0.0001' in result.stdout  # a number in the training settings, not '1e-4'
    result = dry_run(tmp_path, BASE, "--config", "models={wcgan: {width: 4, lr: 3E-4}}")
    assert result.returncode == 0, result.stderr[-2000:]
    assert '"lr": 0.0003' in result.stdout
    (tmp_path / "cli.yaml").write_text(text)
    assert load_config(tmp_path / "cli.yaml")["models"]["wcgan"]["lr"] == pytest.approx(1e-4)
    # Still a string where the schema wants one, and still refused where no reading is a number.
    bad = dry_run(tmp_path, BASE.replace("batch_size: 8}", "batch_size: 8, lr: 1e-4x}"))
    assert "config key models.wcgan.lr: '1e-4x' is not of type 'number'" in config_error(bad)


def test_unquoted_off_means_off_in_config_files_as_on_the_command_line(tmp_path):
    weights = tmp_path / "weights.pth"
    weights.write_bytes(b"found: auto would add the Inception statistics")
    base = BASE.replace(
        "samples_per_label: 5}", f"samples_per_label: 5, inception_weights: {weights}, inception: INC}}"
    )
    auto = dry_run(tmp_path, base.replace("INC", "auto"))
    assert auto.returncode == 0 and "stats/inception/" in auto.stdout, auto.stderr[-2000:]  # the control
    in_file = dry_run(tmp_path, base.replace("INC", "off"))  # YAML 1.1: the boolean false
    assert in_file.returncode == 0, in_file.stderr[-2000:]
    assert "stats/inception/" not in in_file.stdout and "stats/classifier/" in in_file.stdout
    on_line = dry_run(
        tmp_path,
        base.replace("INC", "auto"),
        "--config",
        f"evaluation={{samples_per_label: 5, inception_weights: {weights}, inception: off}}",
    )
    assert on_line.returncode == 0 and "stats/inception/" not in on_line.stdout, on_line.stderr[-2000:]
    (tmp_path / "cli.yaml").write_text(base.replace("INC", "off"))
    assert load_config(tmp_path / "cli.yaml")["evaluation"]["inception"] == "off"
    # A boolean that no allowed word spells is still refused, naming the key.
    (tmp_path / "bad.yaml").write_text(BASE.replace("samples_per_label: 5}", "samples_per_label: on}"))
    with pytest.raises(LabelwiseError, match="config key evaluation.samples_per_label: True is not of type 'integer'"):
        load_config(tmp_path / "bad.yaml")


@pytest.mark.parametrize(
    "text, key, lines",
    [
        (BASE + "seed: 1\nseed: 2\n", "seed", "lines 7 and 8"),
        (
            BASE.replace("budget: {iterations: 6, checkpoint_every: 3}", "budget: {iterations: 6, iterations: 60}"),
            "iterations",
            "lines 4 and 4",
        ),
    ],
    ids=["top-level", "nested"],
)
def test_repeated_key_is_refused_naming_the_file_key_and_lines(tmp_path, text, key, lines):
    said = config_error(dry_run(tmp_path, text))
    assert f"config file {tmp_path / 'user.yaml'}: key {key!r} appears twice in one mapping ({lines})" in said
    assert not (tmp_path / "results").exists()
    (tmp_path / "cli.yaml").write_text(text)
    with pytest.raises(LabelwiseError, match=f"key '{key}' appears twice in one mapping \\({lines}\\)"):
        load_config(tmp_path / "cli.yaml")
