"""Bounded work for every input (issue 23 point 2): inputs that declare more than they hold end in one
line, or are skipped and listed, within seconds, before the allocation.  Each is run in a process
under an address-space limit (RLIMIT_AS), so that a regression fails there instead of taking the
machine: images checked from their header (pixels, aspect ratio), YAML aliases that expand beyond
10,000 values, the schema's maxima for sizes that allocate, and the memory estimates before the
large allocations that remain (docs/faults.md, "Bounds").
"""

from __future__ import annotations

import json
import struct
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import REPO, one_error_line, run_limited, snakemake_command, snakemake_env
from PIL import Image

from labelwise.config import MAX_CONFIG_VALUES, load_config, load_schema
from labelwise.data.sources import MAX_ASPECT, MAX_PIXELS
from labelwise.errors import LabelwiseError

pytestmark = pytest.mark.faults

GiB = 1 << 30
LABELWISE = [sys.executable, "-m", "labelwise.cli"]

# A 342-byte "billion laughs": nine levels of nine aliases, 9^9 = 387,420,489 strings once expanded.
BOMB = "".join(
    f"{name}: &{name} [{', '.join([f'*{prev}'] * 9) if prev else ', '.join(['lol'] * 9)}]\n"
    for prev, name in zip([None, *"abcdefgh"], "abcdefghi")
)


def png_declaring(width: int, height: int) -> bytes:
    """A PNG whose header declares width×height pixels and whose data is a few bytes (a crafted file)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    )


def test_images_too_large_or_too_elongated_are_skipped_from_their_header(tmp_path):
    """`labelwise prepare` of an image folder under 1 GiB of address space.  Before: the 274-byte
    200000×1 PNG took 3.9 GB to resize, the 2,000,000×1 one ended the job in a MemoryError."""
    folder = tmp_path / "images" / "c"
    folder.mkdir(parents=True)
    for i in range(3):
        Image.fromarray(np.full((20, 30, 3), 40 * i, np.uint8)).save(folder / f"good{i}.png")
    Image.new("L", (200_000, 1), 128).save(folder / "strip.png")
    Image.new("L", (2_000_000, 1), 128).save(folder / "long_strip.png")
    Image.new("L", (1, 100_000), 128).save(folder / "tall.png")
    (folder / "huge.png").write_bytes(png_declaring(9000, 9000))  # 81 M pixels, 33:1 is fine but not 81 M
    assert (folder / "strip.png").stat().st_size < 1000
    config = tmp_path / "config.yaml"
    config.write_text(
        yaml.safe_dump({"data": {"source": "imagefolder", "root": str(tmp_path / "images"), "resolution": 16}})
    )
    result = run_limited([*LABELWISE, "prepare", "--config", str(config), "--results", str(tmp_path / "r")], memory=GiB)
    assert result.returncode == 0, result.stderr[-3000:]
    meta = json.loads((tmp_path / "r" / "imagefolder" / "meta.json").read_text())
    assert meta["labels"][0]["count"] == 3
    assert sorted(meta["skipped_files"]) == ["c/huge.png", "c/long_strip.png", "c/strip.png", "c/tall.png"]
    assert f"9000×9000 pixels, more than the {MAX_PIXELS:,} read" in result.stderr
    assert f"200000×1 pixels, more elongated than {MAX_ASPECT}:1" in result.stderr
    assert f"1×100000 pixels, more elongated than {MAX_ASPECT}:1" in result.stderr


@pytest.mark.parametrize(
    "text, said",
    [
        (BOMB, f"the document expands, aliases and all, to more than {MAX_CONFIG_VALUES:,} values"),
        ("a: &a [1, *a]\n", "an alias refers to a value that contains it (a recursive alias)"),
        ("seed: " + "[" * 5000 + "]" * 5000 + "\n", "it nests lists or mappings too deeply to be a config"),
    ],
    ids=["billion-laughs", "recursive-alias", "deep-nesting"],
)
def test_config_that_expands_is_one_line_from_the_command_line(tmp_path, text, said):
    path = tmp_path / "bomb.yaml"
    path.write_text(text)
    assert len(text.encode()) < 20_000
    result = run_limited([*LABELWISE, "prepare", "--config", str(path)], memory=GiB, timeout=60, cwd=tmp_path)
    assert f"ERROR config file {path}: {said}" in one_error_line(result)


def test_alias_bomb_is_one_line_from_snakemake_too(tmp_path):
    """Snakemake reads --configfile itself, before the Snakefile: its reader builds aliases as shared
    values (cheap); rules/common.smk refuses the file before anything expands it.  Before: 50 s and
    more than 3 GB, then a MemoryError traceback (jsonschema printing the expanded value)."""
    (tmp_path / "bomb.yaml").write_text(BOMB)
    cmd = snakemake_command(tmp_path, tmp_path / "bomb.yaml", "-n", cores=1)
    result = run_limited(cmd, memory=2 * GiB, timeout=120, env=snakemake_env())
    lines = [line for line in result.stderr.splitlines() if line.startswith("labelwise: config error:")]
    assert result.returncode != 0 and len(lines) == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert f"config file {tmp_path / 'bomb.yaml'}: the document expands, aliases and all" in lines[0]
    # A few aliases sharing settings are fine.
    shared = "models:\n  wcgan: &small {width: 4, latent_dim: 8, batch_size: 8}\n  dccgan: *small\n"
    (tmp_path / "shared.yaml").write_text(shared)
    config = load_config(tmp_path / "shared.yaml")
    assert config["models"]["dccgan"]["width"] == 4 and config["models"]["wcgan"]["latent_dim"] == 8


# Sizes that allocate (the papers' and the presets' values are well inside): key -> too large a value.
ALLOCATING = {
    ("models", "wcgan", "width"): 100_000,
    ("models", "dccgan", "latent_dim"): 10**6,
    ("models", "wcgan", "batch_size"): 10**8,
    ("models", "cgan", "batch_size"): 10**5,
    ("evaluation", "samples_per_label"): 2 * 10**6,
    ("evaluation", "batch_size"): 10**6,
    ("evaluation", "feature_batch_size"): 10**5,
    ("evaluation", "kid_subset_size"): 10**6,
    ("runtime", "labels_per_job"): 10**5,
    ("runtime", "threads"): 10**6,
}


def _nested(path: tuple, value) -> dict:
    config: dict = {}
    node = config
    for key in path[:-1]:
        node = node.setdefault(key, {})
    node[path[-1]] = value
    return config


@pytest.mark.parametrize("path", sorted(ALLOCATING), ids=".".join)
def test_sizes_that_allocate_have_an_upper_bound(tmp_path, path):
    """`width: 100000`, `batch_size: 1e8`, `samples_per_label: 2e6` (before: allocation tracebacks,
    the last after 104 s) are refused by the schema, naming the key and the maximum."""
    config = tmp_path / "config.yaml"
    value = ALLOCATING[path]
    config.write_text(yaml.safe_dump(_nested(path, value)).replace(str(value), f"{float(value):.0e}"))  # as typed
    with pytest.raises(LabelwiseError, match=rf"config key {'.'.join(path)}: .* is greater than the maximum of \d+"):
        load_config(config)


def test_every_preset_is_inside_the_maxima_with_room():
    """The maxima come from what the largest preset needs: every preset value of a bounded key is at
    most a quarter of its maximum."""
    schema = load_schema()

    def maxima(node, path=()):
        if isinstance(node, dict):
            if "maximum" in node and node.get("type") in ("integer", ["integer", "null"]):
                yield path, node["maximum"]
            for key, sub in node.get("properties", {}).items():
                yield from maxima(sub, (*path, key))
            for part in node.get("allOf", []):
                yield from maxima(schema["$defs"]["gan"] if part.get("$ref") else part, path)

    bounded = dict(maxima(schema))
    assert {p for p in ALLOCATING if p in bounded} == set(ALLOCATING)
    for preset in sorted((REPO / "presets").glob("*.yaml")):
        values = yaml.safe_load(preset.read_text())
        for path, high in bounded.items():
            node = values
            for key in path:
                node = node.get(key) if isinstance(node, dict) else None
            if isinstance(node, int):
                assert node * 4 <= high, f"{preset.name}: {'.'.join(path)} = {node}, maximum {high}"


@pytest.fixture
def big_generator(tmp_path) -> Path:
    """An untrained RGB 64-pixel generator file (its size does not matter here, its output does)."""
    from labelwise.nets import Generator
    from labelwise.train.generator_files import write_generator

    path = tmp_path / "g.pt"
    gen = Generator(8, 3, 64, 4)
    write_generator(
        path,
        gen,
        model="wcgan",
        label=0,
        iterations=0,
        channels=3,
        resolution=64,
        image_size=(64, 64),
        settings={"latent_dim": 8, "width": 4},
    )
    return path


def test_images_that_cannot_fit_are_refused_before_drawing_them(tmp_path, big_generator):
    """`labelwise generate -n 100000` of 3×64×64 images needs ~2.3 GiB for the images alone: refused
    under 1.25 GiB of address space (torch itself takes ~0.7), while -n 16 runs under the same limit."""
    cmd = [*LABELWISE, "generate", "--generator", str(big_generator), "--device", "cpu"]
    refused = run_limited([*cmd, "-n", "100000", "--outdir", str(tmp_path / "out")], memory=5 * GiB // 4)
    line = one_error_line(refused)
    assert "drawing 100000 images of label 0 (3×64×64) in batches of 256 needs about" in line, line
    assert "is available (the address-space limit (ulimit -v))" in line and "generate -n" in line
    assert not (tmp_path / "out").exists()
    done = run_limited([*cmd, "-n", "16", "--outdir", str(tmp_path / "ok")], memory=5 * GiB // 4)
    assert done.returncode == 0 and len(list((tmp_path / "ok").glob("*.png"))) == 16, done.stderr[-2000:]


def test_training_that_cannot_fit_is_refused_before_building_it(tmp_path, make_shard):
    """Width 256 at batch 2048 needs at least ~3.9 GiB for one step: refused in one line under a
    1.5 GiB limit, before the networks exist."""
    shard = make_shard(label=0, n=24)
    settings = {
        "model": {"width": 256, "latent_dim": 100, "batch_size": 2048, "betas": [0.5, 0.9], "critic_steps": 1},
        "budget": {"iterations": 2},
        "seed": 0,
    }
    out = tmp_path / "out"
    cmd = [*LABELWISE, "train", "--model", "wcgan", "--label", "0", "--shard", str(shard), "--device", "cpu"]
    cmd += ["--settings", json.dumps(settings), "--generator", str(out / "g.pt"), "--log", str(out / "l.csv")]
    cmd += ["--checkpoints", str(out / "ckpt")]
    line = one_error_line(run_limited(cmd, memory=3 * GiB // 2))
    assert "training wcgan on 1 label(s) at 32 px, width 256, batch 2048 needs about" in line, line
    assert "lower models.wcgan.batch_size or width" in line
    assert not out.exists()
