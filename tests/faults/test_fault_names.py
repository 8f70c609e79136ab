"""Hostile names (issue 16 points 1, 2 and 8): user strings that reach a path, a figure or a shell.

* `data.name` builds the one results tree (results/<name>, logs/<name>): `.`, `..` and a
  300-character name were accepted or crashed; now one rule (`labelwise.paths.safe_name`) refuses
  them with one line, and `labelwise.paths.inside` refuses any path outside its tree.  A generated
  set of names (Hypothesis) checks that whatever the schema and the rule let through stays one
  folder below results/ and needs no shell quoting.
* Class names come from folder names and reach HDF5 attributes, meta.json, logs and figures (never a
  path or a shell: shards are named by label index).  Generated hostile folder names (math text
  `$…$`, quotes, `$(…)`, backslashes, newlines, non-UTF-8 bytes, long names) go through the data
  stage and the sample grid: every file lands inside the output folder and the figure is drawn.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
from conftest import TINY, snakemake
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from PIL import Image

from labelwise.config import load_schema, validate_config
from labelwise.data import prepare_dataset
from labelwise.errors import LabelwiseError
from labelwise.images import read_images, write_images
from labelwise.paths import NAME_PATTERN, dataset_dir, inside, stored_name
from labelwise.plots import sample_grid

pytestmark = pytest.mark.faults

# Deterministic (the same examples on every run, in CI too) and no example database in the checkout.
HOSTILE = settings(
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
NASTY = [
    ".",
    "..",
    "...",
    "../x",
    "x/..",
    "/etc",
    "a/b",
    "-rf",
    ".hidden",
    "a\n",
    "a b",
    "$(touch pwned)",
    "`id`",
    "a;b",
    "'q'",
    '"q"',
    "a\\b",
    "~",
    "*",
    "x" * 65,
    "x" * 300,
    "é",
    "a\x00b",
    "",
]
SHELL_SAFE = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-")


def test_schema_name_pattern_is_the_paths_rule():
    assert load_schema()["properties"]["data"]["properties"]["name"]["pattern"] == NAME_PATTERN


@HOSTILE
@given(st.one_of(st.sampled_from(NASTY), st.text(max_size=80), st.from_regex(NAME_PATTERN, fullmatch=True)))
def test_dataset_name_stays_one_folder_below_results_or_is_refused_in_one_line(name):
    config = {"data": {"source": "mnist5k", "name": name}}
    try:
        validate_config(config)
        folder = dataset_dir("results", config["data"]["name"])
    except LabelwiseError as exc:
        message = str(exc)
        assert message.startswith("config key data.name: ") and "\n" not in message and len(message) < 400
        return
    assert folder.parent == Path("results") and folder.name == name  # exactly one level below results/
    assert os.path.normpath(folder) == os.path.join("results", name)
    assert set(name) <= SHELL_SAFE and shlex.quote(name) == name and not name.startswith(("-", "."))


@pytest.mark.parametrize("parts", [("..",), ("a", "..", ".."), ("/etc",), ("",), (".",), ("a/../../b",)])
def test_inside_refuses_paths_outside_the_tree(parts):
    with pytest.raises(LabelwiseError, match="outside the results folder results"):
        inside("results", *parts)
    assert inside("results", "a", "b.pt") == Path("results/a/b.pt")


@pytest.mark.parametrize(
    "name, says",
    [
        ("..", "config key data.name: '..' is not allowed; names the folder results/<name>/"),
        (".", "config key data.name: '.' is not allowed"),
        (
            "n" * 300,
            "config key data.name: 'nnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnn'… (300 characters) is not allowed",
        ),
    ],
    ids=["dot-dot", "dot", "300-characters"],
)
def test_bad_dataset_name_stops_the_pipeline_and_the_command_line_before_writing(tmp_path, name, says):
    work = tmp_path / "work"
    work.mkdir()
    result = snakemake(work, dict(TINY, data=dict(TINY["data"], name=name)), "--dry-run")
    lines = [line for line in result.stderr.splitlines() if line.startswith("labelwise: config error:")]
    assert result.returncode != 0 and len(lines) == 1 and says in lines[0], result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert sorted(p.name for p in work.iterdir() if p.name != ".snakemake") == ["config.yaml"]
    # `labelwise prepare --results R` with it wrote into R's parent before.
    results = tmp_path / "R"
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "labelwise.cli",
            "prepare",
            "--config",
            str(work / "config.yaml"),
            "--results",
            str(results),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    errors = [line for line in r.stderr.splitlines() if " ERROR " in line]
    assert r.returncode == 1 and len(errors) == 1 and says in errors[0], r.stderr[-2000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["work"]  # neither R nor anything beside it


# --- class names ------------------------------------------------------------------------------------

MATH = r"cost $\foo$ x"  # the reported crash: a 71-line mathtext traceback after all the training
folder_names = st.one_of(
    st.sampled_from(
        [
            MATH,
            "$",
            "$$",
            r"$\frac{a}{b}$",
            "a_b^c",
            "{}",
            "%s %d",
            "\\",
            "'",
            '"',
            "$(touch pwned)",
            "`id`",
            "a;b|c&",
            "tab\there",
            "new\nline",
            "-rf",
            "ü" * 60,
            "\u202eevil",
            "😀",
        ]
    ),
    st.text(st.characters(blacklist_characters="/\x00", blacklist_categories=("Cs",)), min_size=1, max_size=30),
    st.binary(min_size=1, max_size=20).map(lambda b: os.fsdecode(b.replace(b"/", b"_").replace(b"\0", b"_"))),
).filter(lambda n: not n.startswith(".") and len(os.fsencode(n)) <= 255)


@pytest.mark.filterwarnings("ignore:Glyph .* missing from font")  # drawn as a box: a font's limit, not a fault
@HOSTILE
@given(st.lists(folder_names, min_size=2, max_size=2, unique=True))
@example([MATH, "$"])
@example(["a\udcffb", "new\nline"])  # not UTF-8 (a folder copied from another system); a newline
def test_hostile_class_folder_names_reach_only_files_inside_the_results_and_the_figure(names):
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        root, out = tmp / "images", tmp / "out"
        rng = np.random.default_rng(0)
        for name in names:
            (root / name).mkdir(parents=True)
            for i in range(2):
                Image.fromarray(rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)).save(root / name / f"{i}.png")
        before = {p for p in tmp.rglob("*")}
        meta = prepare_dataset("imagefolder", out, root=root, resolution=16, name="hostile")
        written = {p for p in tmp.rglob("*")} - before
        assert written and all(p == out or out in p.parents for p in written), sorted(map(str, written))
        assert meta["class_names"] == [stored_name(n) for n in sorted(names)]
        for label in (0, 1):
            assert read_images(out / "shards" / f"{label}.h5")[1]["class_name"] == meta["class_names"][label]
        figure = [out / "figures" / "grid.png", out / "figures" / "grid.pdf"]
        sample_grid(
            [out / "shards" / "0.h5", out / "shards" / "1.h5"],
            figure,
            columns=2,
            title=f"samples of {meta['class_names'][0]}",
        )
        assert all(p.stat().st_size > 0 for p in figure)


def test_math_text_class_name_draws_as_written(tmp_path):
    """The reported case on its own: the grid is drawn and the name appears literally (not as math)."""
    path = tmp_path / "0.h5"
    write_images(path, np.zeros((2, 1, 8, 8), np.uint8), label=0, class_name=MATH)
    import matplotlib.pyplot as plt

    texts = []
    real_close = plt.close
    plt.close = lambda fig=None: (texts.extend(t.get_text() for t in fig.findobj(plt.Text)), real_close(fig))
    try:
        sample_grid([path], [tmp_path / "g.png", tmp_path / "g.pdf"], title="a $b$ c")
    finally:
        plt.close = real_close
    assert f"0: {MATH}" in texts and "a $b$ c" in texts


def test_every_path_in_a_rule_shell_command_is_quoted():
    """The shell rule: every {input…}, {output…}, {params…} and {log} a rule's shell command formats is
    quoted (`:q`); the other placeholders are the schema-checked runtime values, wildcards held by
    wildcard_constraints and the launcher (a shell prefix by design)."""
    import re

    from conftest import REPO

    placeholders = [
        (path.name, m.group(0))
        for path in sorted((REPO / "rules").glob("*.smk"))
        for m in re.finditer(r"\{(input|output|params|log)(\.\w+)?(:\w+)?\}", path.read_text())
    ]
    assert len(placeholders) >= 20  # the scan sees the train, scaling and log placeholders
    assert [p for p in placeholders if not p[1].endswith(":q}")] == []
