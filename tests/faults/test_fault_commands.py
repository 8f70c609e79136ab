"""Every command ends in one line (issue 23 points 5 and 6): every `labelwise` subcommand and every
script entry point runs inside `labelwise.cli.run_guarded`, option parsing, the log file and the
model plugins (LABELWISE_MODEL_PLUGINS) included.  Crafted, truncated, empty and ill-typed generator
files, `--batch-size 0`, a deeply nested meta.json and a log file on a full disk are one line each;
a property test feeds generated hostile arguments and files to `generate`, `sample` and `train` in a
process under an address-space limit (docs/faults.md, "Commands").
"""

from __future__ import annotations

import ast
import json
import logging
import os
import re
import select
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import REPO, TINY_MODEL
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import labelwise.models
from labelwise import cli
from labelwise.images import images_sha256, write_images
from labelwise.nets import Generator
from labelwise.train.generator_files import GENERATOR_FORMAT, generator_payload, write_generator

pytestmark = pytest.mark.faults


@pytest.fixture(autouse=True)
def restore_logging():
    """`cli.main` points the labelwise logger at this test's captured stderr: put it back afterwards."""
    logger = logging.getLogger("labelwise")
    saved = logger.handlers[:], logger.level, logger.propagate
    yield
    for handler in logger.handlers:
        if handler not in saved[0]:
            handler.close()
    logger.handlers[:], logger.level, logger.propagate = saved


def single_error(code: int, stderr: str) -> str:
    """The one ERROR line of a failed command's stderr, after checking that there is exactly one, that
    every line is a log line (no traceback, no stray warning) and that the exit is non-zero."""
    lines = stderr.splitlines()
    errors = [line for line in lines if " ERROR " in line]
    log_lines = all(re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d (INFO|WARNING|ERROR) ", line) for line in lines)
    assert code not in (0, None) and len(errors) == 1 and log_lines and "Traceback" not in stderr, stderr
    return errors[0]


def run_main(capsys, argv) -> str:
    """`labelwise ARGV` in this process: its one error line (asserted one, with a non-zero exit)."""
    code = cli.main([str(a) for a in argv])
    return single_error(code, capsys.readouterr().err)


# ------------------------------------------------------------------------------------ option parsing


@pytest.mark.parametrize("stage", cli.build_parser().stages)
def test_every_subcommand_turns_a_bad_option_into_one_line(capsys, stage):
    line = run_main(capsys, [stage, "--config"])
    assert f"labelwise {stage}: argument --config: expected at least one argument; see labelwise {stage} --help" in line
    line = run_main(capsys, [stage, "--bogus", "x"])
    assert line.split(" ERROR ")[1].startswith(("labelwise", "labelwise ")) and "--help" in line


@pytest.mark.parametrize(
    "argv, said",
    [
        ([], "the following arguments are required: STAGE"),
        (["nope"], "invalid choice: 'nope'"),
        (["generate", "--outdir", "o", "--batch-size", "0"], "argument --batch-size: 0 is outside 1..4,096"),
        (["generate", "--outdir", "o", "--batch-size", "-1"], "argument --batch-size: -1 is outside 1..4,096"),
        (["generate", "--outdir", "o", "-n", "nan"], "argument -n: 'nan' is not an integer"),
        (["train", "--model", "wcgan", "--progress-seconds", "nan"], "nan is not a number of seconds in (0, 86400]"),
        (["train", "--model", "wcgan", "--threads", "0"], "argument --threads: 0 is outside 1..1,024"),
        (["sample", "--config", "c", "--model", "m", "--label", "-3"], "argument --label: -3 is outside"),
    ],
    ids=["no-stage", "unknown-stage", "batch-0", "batch-minus-1", "n-nan", "seconds-nan", "threads-0", "label-neg"],
)
def test_bad_values_are_refused_by_the_parser_in_one_line(capsys, argv, said):
    """Before: `--batch-size 0` was a traceback and `--batch-size -1` exited 0 ("wrote 0 PNG file(s)")."""
    assert said in run_main(capsys, argv)


# ------------------------------------------------------------------------------------ generator files


def _payload(**change) -> dict:
    gen = Generator(8, 1, 32, 4)
    payload = generator_payload(
        gen,
        model="wcgan",
        label=0,
        iterations=0,
        channels=1,
        resolution=32,
        image_size=(28, 28),
        settings={"latent_dim": 8, "width": 4},
    )
    for key, value in change.items():
        if key.startswith("arch_"):
            payload["arch"][key[5:]] = value
        else:
            payload[key] = value
    return payload


class Payload:
    """Code that a crafted generator file asks the unpickler to run."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def crafted(path: Path) -> None:
    torch.save({"format": GENERATOR_FORMAT, "arch": Payload(path.parent / "ran")}, path)


def truncated(path: Path) -> None:
    torch.save(_payload(), path)
    path.write_bytes(path.read_bytes()[:700])


# name -> (writes the file, what the one line says after "not a readable labelwise generator (")
GENERATOR_FILES = {
    "crafted-pickle": (crafted, "UnpicklingError"),
    "truncated": (truncated, ""),
    "empty": (lambda p: p.write_bytes(b""), ""),
    "text": (lambda p: p.write_text("generator = 'mine'\n"), ""),
    "a-list": (lambda p: torch.save([1, 2, 3], p), "holds a list, not a generator"),
    "width-a-string": (lambda p: torch.save(_payload(arch_width="64"), p), "arch width='64', expected 1..256"),
    "width-huge": (lambda p: torch.save(_payload(arch_width=10**9), p), "arch width=1000000000, expected 1..256"),
    "two-channels": (lambda p: torch.save(_payload(arch_channels=2), p), "arch channels=2, expected 1 or 3"),
    "image-size-0": (lambda p: torch.save(_payload(image_size=[0, 0]), p), "image_size [0, 0] is not two sides"),
    "labels-strings": (lambda p: torch.save(_payload(labels=["a"]), p), "'labels' is not a list of label numbers"),
    "weights-mismatch": (
        lambda p: torch.save(_payload(arch_latent_dim=9), p),
        "weights do not match the architecture",
    ),
    "training-not-json": (lambda p: torch.save(_payload(training={"t": torch.zeros(1)}), p), "is not a plain JSON"),
}


@pytest.mark.parametrize("kind", sorted(GENERATOR_FILES))
def test_generate_refuses_a_bad_generator_file_in_one_line(capsys, tmp_path, kind):
    """Before: UnpicklingError, EOFError, TypeError, OSError and PIL ValueError tracebacks."""
    write, said = GENERATOR_FILES[kind]
    path = tmp_path / "g.pt"
    write(path)
    line = run_main(capsys, ["generate", "--generator", path, "--outdir", tmp_path / "out"])
    assert f"{path}: not a readable labelwise generator (" in line and said in line, line
    assert not (tmp_path / "out").exists() and not (tmp_path / "ran").exists()


# ------------------------------------------------------------------------------------ other inputs


def _dataset(root: Path) -> Path:
    """results/mnist5k with one label-0 shard, its meta.json and a generator for label 0."""
    ds = root / "mnist5k"
    images = np.random.default_rng(0).integers(0, 256, (8, 1, 28, 28), dtype=np.uint8)
    attrs = dict(label=0, class_name="0", source="mnist5k", resolution=28, channels=1)
    write_images(ds / "shards" / "0.h5", images, **attrs)
    meta = {
        "dataset": "mnist5k",
        "source": "mnist5k",
        "root": None,
        "channels": 1,
        "resolution": 28,
        "class_names": [str(k) for k in range(10)],
        "labels": [{"label": 0, "name": "0", "count": 8, "shard": "shards/0.h5", "sha256": images_sha256(images)}],
        "skipped_files": [],
    }
    (ds / "meta.json").write_text(json.dumps(meta))
    write_generator(
        ds / "wcgan" / "generators" / "0.pt",
        Generator(8, 1, 32, 4),
        model="wcgan",
        label=0,
        iterations=0,
        channels=1,
        resolution=32,
        image_size=(28, 28),
        settings={"latent_dim": 8, "width": 4},
    )
    return ds


CONFIG = {
    "data": {"source": "mnist5k", "labels": [0]},
    "models": {"wcgan": {"width": 4, "latent_dim": 8, "batch_size": 8}},
    "evaluation": {"samples_per_label": 4},
    "runtime": {"device": "cpu"},
}


def test_deeply_nested_meta_json_is_one_line(capsys, tmp_path):
    """Before: a RecursionError traceback."""
    ds = _dataset(tmp_path / "results")
    (ds / "meta.json").write_text("[" * 100_000 + "]" * 100_000)
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(CONFIG))
    common = ["--config", tmp_path / "c.yaml", "--results", tmp_path / "results", "--model", "wcgan", "--label", "0"]
    for stage in ("sample", "train"):
        line = run_main(capsys, [stage, *common])
        assert f"{ds / 'meta.json'}: unreadable meta.json (nested too deeply to be one)" in line, line


def test_log_file_on_a_full_disk_is_one_line(capsys, tmp_path):
    """`--log-file /dev/full` (every write: ENOSPC).  The stage's own error when it fails; when it
    succeeds, the log file's.  Before: five logging tracebacks around the one error."""
    ds = _dataset(tmp_path / "results")
    generator = ds / "wcgan" / "generators" / "0.pt"
    ok = ["generate", "--generator", generator, "--outdir", tmp_path / "out", "-n", "2", "--log-file", "/dev/full"]
    line = run_main(capsys, ok)
    assert "log file /dev/full: could not write to it (No space left on device), so the log is incomplete" in line
    assert len(list((tmp_path / "out").glob("*.png"))) == 2  # the stage itself did its work
    failing = ["generate", "--generator", tmp_path / "none.pt", "--outdir", tmp_path / "o2", "--log-file", "/dev/full"]
    assert "none.pt: generator not found" in run_main(capsys, failing)


PLUGINS = {
    "missing": (None, "cannot import model plugin 'lw_plugin' (ModuleNotFoundError: No module named 'lw_plugin')"),
    "raises": ("raise RuntimeError('site policy says no')\n", "(RuntimeError: site policy says no)"),
    "syntax-error": ("def broken(:\n", "(SyntaxError: invalid syntax"),
}


@pytest.mark.parametrize("kind", sorted(PLUGINS))
def test_a_broken_model_plugin_is_one_line_in_commands_and_scripts(capsys, tmp_path, monkeypatch, kind):
    """Before: a traceback at import, outside the command's guard."""
    code, said = PLUGINS[kind]
    if code is not None:
        (tmp_path / "lw_plugin.py").write_text(code)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("LABELWISE_MODEL_PLUGINS", "lw_plugin")
    monkeypatch.setattr(labelwise.models, "_plugins_loaded", False)
    monkeypatch.delitem(sys.modules, "lw_plugin", raising=False)
    line = run_main(capsys, ["table", "--config", tmp_path / "none.yaml"])
    assert "LABELWISE_MODEL_PLUGINS: " in line and said in line, line
    # A Snakemake script job: the same guard, the same line (in its log too).
    monkeypatch.setattr(labelwise.models, "_plugins_loaded", False)
    smk = types.SimpleNamespace(log=[str(tmp_path / "job.log")], threads=1, config={}, resources={})
    with pytest.raises(SystemExit) as exit_:
        cli.snakemake_entry(smk, lambda smk: None, torch=False)
    assert exit_.value.code == 1
    assert said in single_error(1, capsys.readouterr().err) and said in (tmp_path / "job.log").read_text()


def test_a_model_plugin_runs_and_is_logged(capsys, tmp_path, monkeypatch):
    """Plugins are code (README, "Model plugins"): the module runs in the command's process, and the
    log says which module ran from which file."""
    (tmp_path / "lw_site_plugin.py").write_text(f"open({str(tmp_path / 'ran')!r}, 'w').close()\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("LABELWISE_MODEL_PLUGINS", "lw_site_plugin")
    monkeypatch.setattr(labelwise.models, "_plugins_loaded", False)
    monkeypatch.delitem(sys.modules, "lw_site_plugin", raising=False)
    cli.main(["table", "--config", str(tmp_path / "none.yaml")])
    err = capsys.readouterr().err
    assert (tmp_path / "ran").exists()
    assert f"LABELWISE_MODEL_PLUGINS: imported model plugin lw_site_plugin from {tmp_path / 'lw_site_plugin.py'}" in err


def test_every_script_entry_point_is_only_imports_and_the_guarded_stage():
    """workflow/scripts/*.py: imports, function definitions and one `snakemake_entry(...)` call, so that
    nothing a job does runs outside `run_guarded`; and importing what they import runs no plugin."""
    scripts = sorted((REPO / "workflow" / "scripts").glob("*.py"))
    assert len(scripts) >= 14
    modules = set()
    for script in scripts:
        body = [n for n in ast.parse(script.read_text()).body if not isinstance(n, ast.Expr) or n is not None]
        *rest, last = [n for n in body if not (isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant))]
        assert isinstance(last, ast.Expr) and getattr(last.value.func, "id", None) == "snakemake_entry", script.name
        for node in rest:
            assert isinstance(node, (ast.Import, ast.ImportFrom, ast.FunctionDef)), (script.name, ast.dump(node)[:80])
            if isinstance(node, ast.ImportFrom) and node.module.startswith("labelwise"):
                modules.add(node.module)
    code = "; ".join(f"import {m}" for m in sorted(modules))
    env = dict(os.environ, LABELWISE_MODEL_PLUGINS="no_such_plugin_module")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]


# ------------------------------------------------------------------------------------ property test

WORKER = r"""
import io, json, sys, traceback
from labelwise import cli

for line in sys.stdin:
    argv = json.loads(line)
    captured, real = io.StringIO(), sys.stderr
    sys.stderr = captured
    try:
        code = cli.main(argv)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 2
    except BaseException:
        traceback.print_exc()
        code = None
    finally:
        sys.stderr = real
    print(json.dumps({"code": code, "stderr": captured.getvalue()}), flush=True)
"""


class Worker:
    """One `labelwise.cli.main` per request, in a process capped at 2 GiB of address space."""

    def __init__(self, cwd: Path):
        import resource

        def cap() -> None:
            resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))

        self.proc = subprocess.Popen(
            [sys.executable, "-c", WORKER],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=cwd,
            preexec_fn=cap,
            env=dict(os.environ, LABELWISE_MODEL_PLUGINS=""),
        )

    def run(self, argv: list[str], timeout: float = 120) -> tuple[int, str]:
        self.proc.stdin.write(json.dumps(argv) + "\n")
        self.proc.stdin.flush()
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        line = self.proc.stdout.readline() if ready else ""
        assert line, f"labelwise {argv} did not answer in {timeout} s: {self.proc.poll()=}"
        answer = json.loads(line)
        return answer["code"], answer["stderr"]

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    """The files the property test draws from, and a worker process."""
    root = tmp_path_factory.mktemp("hostile")
    ds = _dataset(root / "results")
    files = {}
    for kind, (write, _) in GENERATOR_FILES.items():
        files[f"gen-{kind}"] = root / "generators" / f"{kind}.pt"
        files[f"gen-{kind}"].parent.mkdir(exist_ok=True)
        write(files[f"gen-{kind}"])
    configs = {
        "bomb": "a: &a [x, x, x, x, x, x, x, x, x, x]\n"
        + "".join(f"{n}: &{n} [{', '.join([f'*{p}'] * 10)}]\n" for p, n in zip("abcdef", "bcdefg")),
        "nan": "models:\n  wcgan: {width: 4, lr: .nan}\n",
        "huge-width": "models:\n  wcgan: {width: 1e9}\n",
        "deep": "seed: " + "[" * 3000 + "]" * 3000 + "\n",
        "not-yaml": "models: [unclosed\n",
        "a-list": "- 1\n- 2\n",
        "binary": None,
    }
    for name, text in configs.items():
        files[f"config-{name}"] = root / "configs" / f"{name}.yaml"
        files[f"config-{name}"].parent.mkdir(exist_ok=True)
        if text is None:
            files[f"config-{name}"].write_bytes(bytes(range(256)))
        else:
            files[f"config-{name}"].write_text(text)
    good_config = root / "configs" / "good.yaml"
    good_config.write_text(yaml.safe_dump(CONFIG))
    # A shard declaring 10^8 images, an external link, a directory, a device, a missing path.
    import h5py

    files["shard-declares-more"] = root / "shards" / "more.h5"
    files["shard-declares-more"].parent.mkdir()
    with h5py.File(files["shard-declares-more"], "w") as f:
        f.create_dataset("images", shape=(10**8, 1, 28, 28), dtype=np.uint8, chunks=(1, 1, 28, 28), compression="gzip")
        f.attrs.update(label=0, count=10**8, sha256="0" * 64)
    files["shard-external-link"] = root / "shards" / "link.h5"
    with h5py.File(files["shard-external-link"], "w") as f:
        f["images"] = h5py.ExternalLink(str(ds / "shards" / "0.h5"), "/images")
        f.attrs.update(label=0, count=8)
    files["a-directory"], files["dev-null"], files["missing"] = root, Path("/dev/null"), root / "missing"
    worker = Worker(root)
    yield {"root": root, "ds": ds, "files": files, "good_config": good_config, "worker": worker}
    worker.close()


# What an option may be given: (valid values, wrong values).  Valid ones are small, so that a run whose
# fault lies elsewhere stays short.
COUNT = (["1", "2"], ["0", "-1", "10**9", "1e3", "nan", "", "99999999999999999999999"])
SEED = (["0", "7"], ["-1", "1.5", "x"])
DEVICE = (["cpu"], ["cuda:99", "tpu", "", "cpu; rm -rf /"])
SECONDS = (["1"], ["nan", "inf", "-1", "0"])
THREADS = (["1"], ["0", "100000", "one"])
GENERATOR_NAMES = [f"gen-{k}" for k in GENERATOR_FILES] + ["a-directory", "dev-null", "missing", "shard-declares-more"]
CONFIG_NAMES = [k for k in ("config-bomb", "config-nan", "config-huge-width", "config-deep", "config-not-yaml",
                            "config-a-list", "config-binary", "a-directory", "missing")]  # fmt: skip
SHARD_NAMES = ["shard-declares-more", "shard-external-link", "gen-truncated", "a-directory", "dev-null", "missing"]
SETTINGS = (
    [json.dumps({"model": TINY_MODEL, "budget": {"iterations": 1}, "seed": 0})],
    [
        "{}",
        "[]",
        "nope",
        '{"model": {"width": NaN}, "budget": {"iterations": 1}, "seed": 0}',
        '{"model": {"batch_size": 1e9}, "budget": {"iterations": 1}, "seed": 0}',
        '{"model": {}, "budget": {"iterations": Infinity}, "seed": 0}',
        '{"model": {}, "budget": {"iterations": 1}, "seed": -1, "extra": 1}',
        "[" * 5000 + "]" * 5000,
    ],
)


def _files(world, names: list[str], good) -> tuple[list[str], list[str]]:
    """A path option: the good file, or one of the hostile ones."""
    return [str(good)], [str(world["files"][n]) for n in names]


def _argv(draw, parts: list[tuple[str, tuple[list[str], list[str]]]]) -> list[str]:
    """One part (or more) given a wrong value, the others valid ones: a fault anywhere is reached."""
    wrong = {draw(st.integers(0, len(parts) - 1))} | set(draw(st.sets(st.integers(0, len(parts) - 1), max_size=1)))
    argv = []
    for i, (option, (valid, bad)) in enumerate(parts):
        argv += [option, draw(st.sampled_from(bad if i in wrong else valid))]
    return argv


def _check(world, argv):
    code, stderr = world["worker"].run(argv)
    single_error(code, stderr)


PROPERTY = settings(
    max_examples=40, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck), database=None
)


@PROPERTY
@given(data=st.data())
def test_generate_with_hostile_arguments_and_files_is_one_line(hostile, data):
    out = hostile["root"] / "generated"
    generator = hostile["ds"] / "wcgan" / "generators" / "0.pt"
    parts = [
        ("--generator", _files(hostile, GENERATOR_NAMES, generator)),
        ("-n", COUNT),
        ("--batch-size", COUNT),
        ("--seed", SEED),
        ("--device", DEVICE),
        ("--label", (["0", "all"], ["-1", "3", "x"])),
    ]
    _check(hostile, ["generate", "--outdir", str(out), *_argv(data.draw, parts)])


@PROPERTY
@given(data=st.data())
def test_sample_with_hostile_arguments_and_files_is_one_line(hostile, data):
    parts = [
        ("--config", _files(hostile, CONFIG_NAMES, hostile["good_config"])),
        ("--model", (["wcgan"], ["nope", "", "../wcgan"])),
        ("--label", (["0"], ["-1", "99", "x", "1"])),
        ("--results", ([str(hostile["root"] / "results")], ["/dev/null", str(hostile["root"] / "missing")])),
    ]
    _check(hostile, ["sample", *_argv(data.draw, parts)])


@PROPERTY
@given(data=st.data())
def test_train_with_hostile_arguments_and_files_is_one_line(hostile, data):
    out = hostile["root"] / "trained"
    parts = [
        ("--settings", SETTINGS),
        ("--shard", _files(hostile, SHARD_NAMES, hostile["ds"] / "shards" / "0.h5")),
        ("--label", (["0"], ["-1", "x"])),
        ("--threads", THREADS),
        ("--progress-seconds", SECONDS),
        ("--device", DEVICE),
    ]
    paths = ["--generator", str(out / "g.pt"), "--log", str(out / "l.csv"), "--checkpoints", str(out / "ckpt")]
    _check(hostile, ["train", "--model", "wcgan", *paths, *_argv(data.draw, parts)])
