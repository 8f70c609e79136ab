"""`snakemake --lint` in CI (tools/snakemake_lint.py, docs/lint.md) and what the lint fixes keep:
a profile's `train:` settings still reach the packed training rules, through public settings."""

from __future__ import annotations

import subprocess
import sys

from conftest import REPO, checkout, snakemake_env

sys.path.insert(0, str(REPO / "tools"))
import snakemake_lint  # noqa: E402


def test_every_lint_finding_of_the_workflow_is_listed_as_deliberate():
    for config in (
        [],
        ["--config", "runtime={labels_per_job: 4}", "budget={snapshots: [0.5]}", "scaling={ks: [1, 2]}"],
    ):
        result = subprocess.run(
            [sys.executable, str(REPO / "tools" / "snakemake_lint.py"), *config],
            capture_output=True,
            text=True,
            timeout=300,
            env=snakemake_env(),
        )
        assert result.returncode == 0, result.stdout + result.stderr[-3000:]
        assert "all deliberate" in result.stdout


def test_an_unlisted_finding_is_reported_with_its_place():
    report = (
        "Lints for snakefile /x/rules/common.smk:\n"
        "    * Environment variable LABELWISE_ROOT used but not asserted with envvars directive in line 25.:\n"
        "      Asserting existence ...\n"
        "Lints for rule train (line 11, /x/rules/train.smk):\n"
        "    * Shell command directly uses variable LAUNCHER from outside of the rule:\n"
        "Lints for snakefile /x/rules/train.smk:\n"
        "    * Path composition with '+' in line 50:\n"
    )
    found = snakemake_lint.findings(report)
    assert len(found) == 3
    rows = snakemake_lint.deliberate((REPO / "docs" / "lint.md").read_text())
    assert snakemake_lint.unlisted(found, rows) == [("/x/rules/train.smk", "Path composition with '+'")]


def test_a_profiles_train_settings_reach_the_packed_rules(tmp_path):
    workdir = checkout(tmp_path)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "snakemake",
            "-n",
            "-p",
            "--cores",
            "4",
            "--config",
            "runtime={labels_per_job: 2}",
            "data={labels: [0, 1, 2]}",
            "models={wcgan: {}}",
            "--set-threads",
            "train=2",
            "--set-resources",
            "train:gpu=1",
            "--",
            *(f"results/mnist5k/wcgan/samples/{k}.h5" for k in (0, 1, 2)),
        ],
        cwd=workdir,
        env=snakemake_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-3000:]
    assert "rule train_labels_0_1:" in out and "rule train_labels_2_2:" in out and "rule train:" not in out
    assert out.count("--threads 2") == 2 and out.count("gpu=1") >= 2, out[-3000:]
