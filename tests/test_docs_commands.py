"""Every command the documentation shows is run as printed.

Convention (README "Tests"): a documented command is a line of a fenced code block marked `bash` or
`sh` in README.md or docs/*.md, or a line of a preset's leading comment block, that starts (after
optional `NAME=value` assignments) with `snakemake`, `.venv/bin/snakemake`, `labelwise` or `make`;
a line ending in a backslash continues on the next, and a `# comment` after it is dropped.  Inline
code in prose is not a command.

Each file's commands run in file order in one copy of the checkout (so a `labelwise train` finds
what the `labelwise prepare` above it wrote), through bash, as a user would paste them:
`snakemake ...` with ` -n` appended (a dry run through the real profiles and presets), `make ...` as
`make -n ...`, `labelwise ...` for real.  The copy's `config.yaml` is a tiny CPU config (mnist5k,
label 3, width 4, 2 iterations), the Slurm variables are set to "", `scontrol` is stubbed
(conftest.failing_scontrol) and a stand-in of the ImageNet preset's `data/imagenet/train` (1,000 empty class
folders) is there.  A command that needs a tool this machine lacks (conda for `--sdm conda`) is
skipped with the reason.  Commands for an allocation profile must not pass `--config` (it would
replace the profile's `config:` and its launcher) unless they repeat the launcher.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import REPO, subprocess_path

DOCUMENTS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
PRESETS = sorted((REPO / "presets").glob("*.yaml"))
CHECKOUT = (
    "Snakefile",
    "config.yaml",
    "rules",
    "workflow",
    "envs",
    "profiles",
    "presets",
    "Makefile",
    "requirements.lock",
    "pyproject.toml",
    "tools",
    "benchmarks",
    "container",
    "labelwise",
    "tests",
)
COMMAND = re.compile(
    r"^(?:\w+=(?:\"[^\"]*\"|'[^']*'|\S+)\s+)*(?:\.venv/bin/snakemake|snakemake|labelwise|make)(?:\s|$)"
)
TINY = {
    "data": {"source": "mnist5k", "labels": [3]},
    "models": {
        "wcgan": {"width": 4, "latent_dim": 8, "batch_size": 8},
        "dccgan": {"width": 4, "latent_dim": 8, "batch_size": 8},
    },
    "budget": {"iterations": 2, "checkpoint_every": 2},
    "evaluation": {"samples_per_label": 5, "classifier_epochs": 1, "inception": "off"},
    "runtime": {"device": "cpu", "progress_seconds": 1},
}
NEEDS = {"--sdm conda": "conda", "--sdm apptainer": "apptainer"}


def strip_comment(line: str) -> str:
    """`line` without a trailing bash comment (a # that starts a word outside quotes)."""
    quote = None
    for i, ch in enumerate(line):
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i].rstrip()
    return line.rstrip()


def commands_in_lines(lines) -> list[tuple[int, str]]:
    found, pending, start = [], "", 0
    for number, line in lines:
        if pending:
            pending += " " + line.strip()
        else:
            pending, start = line.strip(), number
        if pending.endswith("\\"):
            pending = pending[:-1].rstrip()
            continue
        command = strip_comment(pending)
        if COMMAND.match(command):
            found.append((start, command))
        pending = ""
    return found


def documented_commands(path: Path) -> list[tuple[int, str]]:
    """(line number, command) of every documented command in `path` (the convention above)."""
    lines = path.read_text().splitlines()
    if path.suffix == ".yaml":  # a preset: its leading comment block
        block = []
        for number, line in enumerate(lines, 1):
            if not line.startswith("#"):
                break
            block.append((number, line[1:]))
        return commands_in_lines(block)
    found, fence = [], None
    for number, line in enumerate(lines, 1):
        stripped = line.strip()
        if fence is None and stripped.startswith("```"):
            fence = (stripped[3:].strip(), [])
        elif fence is not None and stripped.startswith("```"):
            if fence[0] in ("bash", "sh"):
                found += commands_in_lines(fence[1])
            fence = None
        elif fence is not None:
            fence[1].append((number, line))
    return found


CASES = [(path, number, command) for path in DOCUMENTS + PRESETS for number, command in documented_commands(path)]
_WORKSPACES: dict[Path, tuple[Path, dict]] = {}


def workspace(document: Path, tmp_path_factory) -> tuple[Path, dict]:
    """The copy of the checkout in which `document`'s commands run, and their environment."""
    if document not in _WORKSPACES:
        root = tmp_path_factory.mktemp(document.stem)
        for name in CHECKOUT:
            if (REPO / name).exists():
                (shutil.copytree if (REPO / name).is_dir() else shutil.copy)(
                    REPO / name,
                    root / name,
                    **({"ignore": shutil.ignore_patterns("results", "__pycache__")} if (REPO / name).is_dir() else {}),
                )
        (root / "config.yaml").write_text(yaml.safe_dump(TINY))
        (root / ".venv").symlink_to(Path(sys.prefix))
        for i in range(1000):
            (root / "data" / "imagenet" / "train" / f"n{i:08d}").mkdir(parents=True)
        env = dict(
            os.environ,
            PATH=subprocess_path(),
            LABELWISE_SLURM_ACCOUNT="",
            LABELWISE_SLURM_PARTITION="",
            TORCH_HOME=str(root / "no-torch-home"),
        )
        for key in [k for k in env if k.startswith(("SLURM_", "LSB_", "LABELWISE_ALLOCATION"))]:
            env.pop(key)
        _WORKSPACES[document] = (root, env)
    return _WORKSPACES[document]


def as_run(command: str) -> str:
    """The command as the test runs it: a dry run for snakemake and make."""
    program = COMMAND.match(command).group(0).split()[-1]
    if program.endswith("snakemake"):
        return command + " -n"
    if program == "make":
        return re.sub(r"(^|\s)make(\s|$)", r"\1make -n\2", command, count=1)
    return command


def test_the_convention_finds_the_commands_it_should():
    readme = [c for p, _, c in CASES if p.name == "README.md"]
    assert "make run" in readme and "make test" in readme
    assert any(
        c.startswith("snakemake paper --profile profiles/slurm --configfile presets/cifar10.yaml") for c in readme
    )
    assert any(c.startswith("labelwise generate ") for c in readme)
    assert sum(c.startswith("labelwise ") for c in readme) >= 8  # the stages block and generate
    assert {p.stem for p, _, _ in CASES if p.suffix == ".yaml"} == {p.stem for p in PRESETS}
    sample = [
        (1, "  snakemake --profile a \\"),
        (2, "    --configfile b.yaml   # note"),
        (3, "sbatch x"),
        (4, "FOO='a b' labelwise grid --x '#not a comment'"),
    ]
    assert commands_in_lines(sample) == [
        (1, "snakemake --profile a --configfile b.yaml"),
        (4, "FOO='a b' labelwise grid --x '#not a comment'"),
    ]


@pytest.mark.parametrize("document, line, command", CASES, ids=[f"{p.relative_to(REPO)}:{n}" for p, n, _ in CASES])
def test_documented_command_runs_as_printed(document, line, command, tmp_path_factory):
    for flag, tool in NEEDS.items():
        if flag in command and shutil.which(tool) is None:
            pytest.skip(f"{document.name}:{line} needs {tool}, which this machine lacks: {command}")
    profile = re.search(r"--profile\s+(\S+)", command)
    if profile and "--config " in command:
        profile_config = yaml.safe_load((REPO / profile.group(1) / "config.v8+.yaml").read_text())
        assert "config" not in profile_config or "launcher" in command, (
            f"{document.name}:{line}: --config replaces {profile.group(1)}'s config: (its launcher); "
            "give the settings with --configfile"
        )
    root, env = workspace(document, tmp_path_factory)
    result = subprocess.run(
        ["bash", "-c", as_run(command)], cwd=root, env=env, capture_output=True, text=True, timeout=900
    )
    assert result.returncode == 0, f"{document.name}:{line}: {command}\n{(result.stdout + result.stderr)[-3000:]}"
