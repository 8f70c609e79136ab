"""`labelwise generate`: images on demand from trained generators, reproducible from a seed, and the
pipeline's own files left exactly as they were."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import TINY_MODEL
from PIL import Image

from labelwise.cli import main

LABELS = (0, 7)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny run's results: wcgan generators of labels 0 and 7, and the single cgan over both."""
    tmp = tmp_path_factory.mktemp("generate")
    config = {
        "data": {"source": "mnist5k", "labels": list(LABELS)},
        "models": {"wcgan": dict(TINY_MODEL), "cgan": dict(TINY_MODEL)},
        "budget": {"iterations": 2, "checkpoint_every": 2},
        "runtime": {"device": "cpu", "threads": 1, "progress_seconds": 1},
    }
    (tmp / "config.yaml").write_text(yaml.safe_dump(config))
    args = ["--config", str(tmp / "config.yaml"), "--results", str(tmp / "results")]
    assert main(["prepare", *args]) == 0
    assert main(["train", *args, "--model", "cgan"]) == 0
    for label in LABELS:
        assert main(["train", *args, "--model", "wcgan", "--label", str(label)]) == 0
    return tmp, args


def snapshot(folder: Path) -> dict[str, tuple[str, int]]:
    """Every file under `folder`: its SHA-256 and modification time (ns)."""
    return {
        str(p.relative_to(folder)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_the_same_seed_gives_byte_identical_pngs_and_the_results_stay_untouched(trained, tmp_path):
    tmp, args = trained
    before = snapshot(tmp / "results")
    runs = {}
    for name, seed in (("a", 5), ("b", 5), ("c", 6)):
        out = tmp_path / name
        assert (
            main(
                [
                    "generate",
                    *args,
                    "--model",
                    "wcgan",
                    "--label",
                    "all",
                    "-n",
                    "3",
                    "--seed",
                    str(seed),
                    "--outdir",
                    str(out),
                    "--grid",
                    "--device",
                    "cpu",
                ]
            )
            == 0
        )
        runs[name] = {p.name: p.read_bytes() for p in sorted(out.iterdir())}
    names = sorted([f"wcgan_label{k}_{i:04d}.png" for k in LABELS for i in range(3)] + ["wcgan_grid.png"])
    assert sorted(runs["a"]) == names
    assert runs["a"] == runs["b"]  # same seed: the same bytes
    assert all(runs["a"][n] != runs["c"][n] for n in names)  # another seed: other images
    image = np.asarray(Image.open(tmp_path / "a" / "wcgan_label7_0002.png"))
    assert image.shape == (28, 28) and image.dtype == np.uint8  # mnist5k's size and channel, not the network's 32
    grid = np.asarray(Image.open(tmp_path / "a" / "wcgan_grid.png"))
    assert grid.shape == (2 * 28 + 2, 3 * 28 + 2 * 2)  # one row per label, one column per image
    assert np.array_equal(grid[30:58, 60:88], image)
    assert snapshot(tmp / "results") == before  # the pipeline's files: same bytes, same times, none added


def test_one_label_of_the_conditional_model_and_a_given_generator_file(trained, tmp_path):
    tmp, args = trained
    ds = tmp / "results" / "mnist5k"
    assert main(["generate", *args, "--model", "cgan", "--label", "7", "-n", "2", "--outdir", str(tmp_path / "c")]) == 0
    assert sorted(p.name for p in (tmp_path / "c").iterdir()) == ["cgan_label7_0000.png", "cgan_label7_0001.png"]
    given = ds / "wcgan" / "generators" / "0.pt"
    assert main(["generate", "--generator", str(given), "-n", "2", "--outdir", str(tmp_path / "g")]) == 0
    assert sorted(p.name for p in (tmp_path / "g").iterdir()) == ["wcgan_label0_0000.png", "wcgan_label0_0001.png"]
    # the same generator, through the pipeline's layout: the same images
    assert (
        main(["generate", *args, "--model", "wcgan", "--label", "0", "-n", "2", "--outdir", str(tmp_path / "p")]) == 0
    )
    assert (tmp_path / "g" / "wcgan_label0_0001.png").read_bytes() == (
        tmp_path / "p" / "wcgan_label0_0001.png"
    ).read_bytes()


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--model", "wcgan", "--label", "3"], "label(s) [3] are not among the configured labels [0, 7]"),
        (["--model", "wcgan", "--label", "x"], "--label takes label numbers or 'all'"),
        (["--model", "wcgan", "--outdir-in-results"], "is inside the pipeline's results folder"),
    ],
)
def test_bad_requests_end_in_one_error_line_and_write_nothing(trained, tmp_path, capsys, extra, message):
    tmp, args = trained
    before = snapshot(tmp / "results")
    outdir = tmp / "results" / "mine" if "--outdir-in-results" in extra else tmp_path / "out"
    extra = [e for e in extra if e != "--outdir-in-results"]
    assert main(["generate", *args, *extra, "-n", "2", "--outdir", str(outdir)]) == 1
    errors = [line for line in capsys.readouterr().err.splitlines() if " ERROR " in line]
    assert len(errors) == 1 and message in errors[0], errors
    assert not outdir.exists() and snapshot(tmp / "results") == before
