"""Parsing the Snakefile stays cheap: no torch, torchvision or torch-fidelity at parse time.

Importing those three costs seconds, and every `snakemake` invocation (a dry run, a status check, each
job's own re-parse on a cluster) parses the Snakefile.  The parse-time helpers (config validation,
`labelwise.plan` with `num_classes`, the Inception weights lookup) are torch-free; these tests keep
them so.  Inside pytest
torch is already imported (conftest), so every check runs in a fresh interpreter.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import REPO, subprocess_path

HEAVY = ("torch", "torchvision", "torch_fidelity")
IMPORT = re.compile(r"(import\s+[\w.]+|from\s+[\w.]+\s+import\s)")
RUN_BLOCK = re.compile(r"run\s*:\s*(#.*)?$")


def smk_files() -> list[Path]:
    """The Snakefile, every file it includes and every rules/*.smk."""
    snakefile = REPO / "Snakefile"
    included = re.findall(r"^include:\s*[\"']([^\"']+)[\"']", snakefile.read_text(), flags=re.M)
    files = [snakefile, *(REPO / p for p in included)]
    return files + [p for p in sorted((REPO / "rules").glob("*.smk")) if p not in files]


def parse_time_imports(path: Path) -> list[str]:
    """The import statements of a .smk file, as Snakemake runs them while parsing: at any indentation
    (an import under an `if` or in an input function counts, whatever the config), except inside a
    rule's `run:` block, which runs in the job.  Parenthesised and backslash-continued imports are
    joined into one statement."""
    statements, run_indent, pending = [], None, None
    for line in path.read_text().splitlines():
        stripped = line.strip()
        indent = len(line) - len(line.lstrip())
        if pending is not None:
            pending += " " + stripped.rstrip("\\")
            if pending.count("(") <= pending.count(")") and not line.rstrip().endswith("\\"):
                statements.append(pending)
                pending = None
            continue
        if run_indent is not None:
            if not stripped or stripped.startswith("#") or indent > run_indent:
                continue
            run_indent = None
        if RUN_BLOCK.match(stripped):
            run_indent = indent
        elif IMPORT.match(stripped):
            statement = stripped.split("#", 1)[0].strip()
            if statement.count("(") > statement.count(")") or statement.endswith("\\"):
                pending = statement.rstrip("\\")
            else:
                statements.append(statement)
    return statements


def loaded_after(code: str, env: dict | None = None) -> dict:
    """Run `code` in a fresh interpreter; report which of HEAVY it left imported."""
    probe = f"{code}\nimport json, sys\nprint(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))"
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=300, env=env
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_the_import_reader_sees_the_parse_time_imports(tmp_path):
    statements = [s for p in smk_files() for s in parse_time_imports(p)]
    # The lookups common.smk does at parse time, so that an empty or broken reader cannot pass.
    assert "import labelwise.config" in statements
    assert "import labelwise.plan" in statements
    assert any("resolve_inception_weights" in s for s in statements)
    # and it keeps multi-line imports whole and skips run: blocks
    sample = tmp_path / "sample.smk"
    sample.write_text(
        "from a.b import (\n    c,\n    d,\n)\nrule x:\n    run:\n        import torch\n"
        "        shell('x')\n\nif True:\n    import e  # comment\n"
    )
    assert parse_time_imports(sample) == ["from a.b import ( c, d, )", "import e"]


def test_snakefile_parse_time_imports_load_no_torch():
    statements = [s for p in smk_files() for s in parse_time_imports(p)]
    assert loaded_after("\n".join(statements)) == []


def test_dry_run_imports_no_torch(tmp_path):
    """The whole of `snakemake -n` on the default config (ten labels, Inception 'auto', so the weights
    lookup runs): no module of HEAVY is imported, by the .smk files or by anything they call."""
    shutil.copy(REPO / "config.yaml", tmp_path / "config.yaml")
    env = dict(os.environ, PATH=subprocess_path(), TORCH_HOME=str(tmp_path / "no-torch-home"))
    cmd = [
        sys.executable,
        "-X",
        "importtime",
        "-m",
        "snakemake",
        "-n",
        "-q",
        "-s",
        str(REPO / "Snakefile"),
        "--directory",
        str(tmp_path),
        "--configfile",
        str(tmp_path / "config.yaml"),
    ]
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stderr.splitlines()
    imported = {line.rsplit("|", 1)[-1].strip() for line in lines if line.startswith("import time:")}
    assert "labelwise.metrics.inception_weights" in imported  # the lookup ran (and -X importtime worked)
    assert sorted(m for m in imported if m.split(".")[0] in HEAVY) == []


def test_metrics_package_is_lazy_but_complete():
    import labelwise.metrics as metrics

    assert loaded_after("import labelwise.metrics, labelwise.metrics.inception_weights") == []
    assert "torch" in loaded_after("from labelwise.metrics import evaluate_model")
    submodules = [
        importlib.import_module(f"labelwise.metrics.{m}") for m in ("classifier", "evaluate", "realstats", "stats")
    ]
    for name in metrics.__all__:  # each exported name is its submodule's own object
        assert any(getattr(module, name, None) is getattr(metrics, name) for module in submodules), name
    from labelwise.metrics import inception as inc  # submodules still import as attributes
    from labelwise.metrics import stats as S

    assert S.frechet_distance is metrics.frechet_distance
    assert inc.resolve_inception_weights.__module__ == "labelwise.metrics.inception_weights"
    with pytest.raises(AttributeError):
        metrics.no_such_name  # noqa: B018


def test_inception_weights_lookup_agrees_with_torch_and_torch_fidelity(monkeypatch, tmp_path):
    from torch_fidelity.feature_extractor_inceptionv3 import URL_INCEPTION_V3

    from labelwise.metrics import inception_weights as iw

    assert iw.URL_INCEPTION_V3 == URL_INCEPTION_V3  # the copy kept to avoid importing torch-fidelity
    monkeypatch.setattr(torch.hub, "_hub_dir", None)
    for torch_home, xdg in ((str(tmp_path / "th"), None), (None, str(tmp_path / "xdg")), (None, None), ("~/t", None)):
        for key, value in (("TORCH_HOME", torch_home), ("XDG_CACHE_HOME", xdg)):
            if value is None:
                monkeypatch.delenv(key, raising=False)
            else:
                monkeypatch.setenv(key, value)
        assert iw.default_hub_dir() == Path(torch.hub.get_dir())
    # once torch is imported, torch decides (set_dir, or a patched get_dir as in test_metrics)
    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "elsewhere"))
    assert iw.hub_dir() == tmp_path / "elsewhere"
