"""The `labelwise` command line: every pipeline stage, runnable without Snakemake.

Subcommands `prepare`, `train` (one label, or several labels as one packed job), `sample`, `grid`,
`classifier`, `evaluate`, `curves`, `compare`, `table` and `generate` write what the rules write
(`labelwise --help`; README, "Stages without Snakemake").  Paths default to the pipeline's layout
under --results (default: results/); the Snakemake rules pass explicit paths instead.  A
LabelwiseError prints one `ERROR` log line, naming the culprit and the fix, and exits 1.
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import subprocess
import sys
from pathlib import Path

from . import models
from .errors import LabelwiseError
from .io import file_system_failure
from .plan import (
    dataset_name,
    layout,
    model_files,
    ordered_models,
    paper_table_caption,
    selected_labels,
    train_settings,
)

log = logging.getLogger("labelwise")


class _JobLogFileHandler(logging.FileHandler):
    """The job's log file (--log-file, a rule's log).  A write it cannot make (a full disk, a vanished
    file system) stops it writing and is kept in `failure`, for `run_guarded` to report as one line,
    instead of logging's traceback for this and every later record."""

    failure: OSError | None = None

    def emit(self, record) -> None:
        if self.failure is None:
            super().emit(record)

    def handleError(self, record) -> None:
        exc = sys.exc_info()[1]
        if isinstance(exc, OSError):
            self.failure = self.failure or exc
        else:
            super().handleError(record)

    def flush(self) -> None:
        try:
            super().flush()
        except OSError as exc:
            self.failure = self.failure or exc

    def close(self) -> None:
        try:
            super().close()
        except OSError as exc:  # the buffered rest of a log on a full disk
            self.failure = self.failure or exc


def setup_logging(logfile: str | None = None) -> None:
    """Log lines of the `labelwise` loggers to stderr and, when given, appended to `logfile`.  Call it
    inside `run_guarded` (as `main` and `snakemake_entry` do): a log file that cannot be opened is then
    one error line on stderr."""
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%Y-%m-%d %H:%M:%S")
    root = logging.getLogger("labelwise")
    handlers[0].setFormatter(fmt)
    root.handlers[:] = handlers  # stderr first: a failure opening the file below is logged there
    root.setLevel(logging.INFO)
    root.propagate = False
    if logfile:
        Path(logfile).parent.mkdir(parents=True, exist_ok=True)
        # backslashreplace: a class name from a non-UTF-8 folder name must not break the log
        handler = _JobLogFileHandler(logfile, errors="backslashreplace")
        handler.setFormatter(fmt)
        root.handlers.append(handler)


def _log_file_failure() -> str | None:
    """One line for a job log that stopped being written (`_JobLogFileHandler`), or None."""
    from .io import fix_for

    for handler in logging.getLogger("labelwise").handlers:
        if isinstance(handler, _JobLogFileHandler) and handler.failure is not None:
            why = handler.failure.strerror or handler.failure
            return (
                f"log file {handler.baseFilename}: could not write to it ({why}), so the log is incomplete "
                f"although the stage finished; {fix_for(handler.failure)}"
            )
    return None


def run_guarded(fn, *args, **kwargs) -> int:
    """Run a stage; a LabelwiseError or an OSError naming a file (a write the file system refused)
    becomes one error line and exit status 1, Ctrl-C one line and 130.  A job log that could not be
    written (a full disk) is that one line when the stage itself succeeded."""
    try:
        fn(*args, **kwargs)
    except LabelwiseError as exc:
        log.error("%s", exc)
        return 1
    except OSError as exc:
        if exc.filename is None:  # not a file-system failure: a bug, keep its traceback
            raise
        log.error("%s", file_system_failure(exc))  # a folder that cannot be made, a file in the way
        return 1
    except KeyboardInterrupt:  # Ctrl-C outside a training loop (which checkpoints and stops itself)
        log.error("interrupted (SIGINT) before this stage finished; no file is left half-written; rerun it to continue")
        return 130
    failure = _log_file_failure()
    if failure:
        log.error("%s", failure)
        return 1
    return 0


# Set in the process a launcher started, so that it runs the stage instead of launching again.
LAUNCHED_ENV = "LABELWISE_LAUNCHED"


def launch_command(smk) -> str | None:
    """The command that reruns this script job behind `runtime.launcher` (`srun ...`, `jsrun ...`) and
    inside `runtime.container` (`apptainer exec ... image.sif`), or None to run it here.

    Allocation mode (profiles/frontier, profiles/summit) runs Snakemake and its local jobs on a launch
    or first node; a job that a profile gives a GPU (`gpu` resource: sampling, classifier, statistics,
    evaluation) must run on a GPU of the allocation instead, as training does through the launcher in
    its shell command.  A `script:` rule has no command to put a prefix in front of, so the script
    starts itself again behind the launcher: Snakemake's copy of it (with the job's inputs, outputs
    and params inside) lies in .snakemake/scripts/ of the working directory, on the shared file system.
    With a container every script job runs in the image (GPU jobs: the launcher starts the image), with
    the image's `python`.
    """
    runtime = smk.config.get("runtime", {})
    launcher = str(runtime.get("launcher") or "").strip()
    container = str(runtime.get("container") or "").strip()
    if not int(smk.resources.get("gpu", 0) or 0):
        launcher = ""
    if os.environ.get(LAUNCHED_ENV) or not (launcher or container):
        return None
    python = "python" if container else shlex.quote(sys.executable)
    prefix = " ".join(part for part in (launcher, container) if part)
    return f"{prefix} {python} {shlex.quote(os.path.abspath(sys.argv[0]))}"


def snakemake_entry(smk, stage, torch: bool = True) -> None:
    """Entry point for `script:` rules: log to the rule's log file, run `stage(smk)`, exit 1 on bad input.

    Torch and the BLAS libraries get the rule's `threads` and no more: on a shared node, every
    job spinning up one thread per core slows them all down several-fold.  In allocation mode a job
    with a GPU runs behind the launcher (`launch_command`).  torch=False: a stage that never uses
    torch (data preparation: 1,000 jobs for ImageNet) skips importing it.
    """
    command = launch_command(smk)
    if command is not None:
        sys.exit(subprocess.call(command, shell=True, env={**os.environ, LAUNCHED_ENV: "1"}))
    from threadpoolctl import threadpool_limits

    def guarded() -> None:  # everything inside the one-line guard: the log file, the plugins, the stage
        setup_logging(smk.log[0] if smk.log else None)
        models.load_plugins()
        if torch:
            from .device import set_threads

            set_threads(smk.threads)
        with threadpool_limits(limits=smk.threads):
            stage(smk)

    setup_logging()  # stderr, until the rule's log file is open
    sys.exit(run_guarded(guarded))


# --- helpers shared by the subcommands ---------------------------------------------------------


def _config(args) -> dict:
    from .config import load_config

    return load_config(*args.config)


def _config_names(args) -> str:
    return " ".join(map(str, args.config))


def _dataset_dir(args, config) -> Path:
    from .paths import dataset_dir

    return dataset_dir(args.results, dataset_name(config))


def _model(args, config) -> str:
    if args.model not in config["models"]:
        raise LabelwiseError(f"model {args.model!r} is not configured under models: in {_config_names(args)}")
    return args.model


def _labels(config, sharded: bool = False) -> list[int]:
    """The pipeline's labels (rules/common.smk LABELS); sharded: the ones it shards (SHARDED_LABELS)."""
    labels, sharded_labels = selected_labels(config)
    return sharded_labels if sharded else labels


def _require(paths, first: str) -> list[Path]:
    """`paths` when all exist, else a LabelwiseError naming the first missing one and the stage to run
    first (`first`, a format string that may use {stem}: the missing file's name without suffix)."""
    missing = [Path(p) for p in paths if not Path(p).is_file()]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        stage = first.format(stem=missing[0].stem)
        raise LabelwiseError(f"{missing[0]} not found{more}; run `labelwise {stage}` first")
    return [Path(p) for p in paths]


def _device(config) -> str:
    """runtime.device, after limiting torch to runtime.threads (what the rules' jobs get)."""
    from .device import set_threads

    set_threads(config["runtime"]["threads"])
    return config["runtime"]["device"]


def _figure(ds: Path, stem: str) -> list[Path]:
    return [Path(layout("figure", ds=ds, name=stem, ext=ext)) for ext in ("png", "pdf")]


def _evaluated(args, config) -> list[Path]:
    """The configured models' metrics.json files that exist, in the papers' order (as rules/common.smk)."""
    ds = _dataset_dir(args, config)
    names = ordered_models(config["models"])
    paths = [p for p in (Path(layout("metrics", ds=ds, model=m)) for m in names) if p.is_file()]
    if not paths:
        raise LabelwiseError(
            f"no {ds}/<model>/metrics.json for models {names}; run `labelwise evaluate --model M` first"
        )
    return paths


# --- subcommands ---------------------------------------------------------------------------------


def cmd_prepare(args) -> None:
    from .data import prepare_dataset

    config = _config(args)
    d = config["data"]
    labels = None if d["labels"] == "all" or d["source"] != "imagefolder" else d["labels"]
    runtime = config["runtime"]
    prepare_dataset(
        d["source"],
        str(_dataset_dir(args, config)),
        root=d["root"],
        labels=labels,
        resolution=d["resolution"],
        download=d["download"],
        name=dataset_name(config),
        threads=runtime["threads"],
        jpeg_draft=d["jpeg_draft"],
        progress_seconds=runtime["progress_seconds"],
    )


def cmd_train(args) -> None:
    from .train import Budget, Outputs, train_job

    if args.settings:  # the Snakemake rule: settings as JSON, every path explicit
        from .config import check_train_settings

        settings, runtime = check_train_settings(args.settings, args.model), {}
        missing = [f"--{k}" for k in ("shard", "generator", "log", "checkpoints") if not getattr(args, k)]
        if missing:
            raise LabelwiseError(f"train with --settings needs {', '.join(missing)}")
        base = None
    elif args.config:
        config = _config(args)
        settings = train_settings(
            config, _model(args, config), len(_labels(config))
        )  # cgan: the labels' budgets summed
        runtime = config["runtime"]
        base = _dataset_dir(args, config)
    else:
        raise LabelwiseError("train needs --config (or --settings with explicit paths)")
    conditional = models.get(args.model).conditional
    if not conditional and not args.label:
        raise LabelwiseError(f"train --model {args.model} needs --label")
    names = model_files(args.model, args.label)  # a conditional model: its one set of files
    per_name = {"generator": "generator", "log": "train_log", "checkpoints": "checkpoints"}  # -> LAYOUT
    with_snapshots = bool(args.snapshots or (base is not None and settings["budget"].get("snapshots")))
    if with_snapshots:
        per_name["snapshots"] = "snapshots"

    def paths(key: str) -> list[Path]:
        given = getattr(args, key)
        if given is None:
            return [Path(layout(per_name[key], ds=base, model=args.model, label=n)) for n in names]
        if len(given) != len(names):
            raise LabelwiseError(f"train: --{key} needs one path per label ({len(names)}), got {len(given)}")
        return [Path(g) for g in given]

    columns = {key: paths(key) for key in per_name}
    outputs = [Outputs(**{key: columns[key][i] for key in per_name}) for i in range(len(names))]
    if conditional:  # one conditional model over every given shard (default: the selected labels')
        shards = args.shard or [Path(layout("shard", ds=base, label=k)) for k in _labels(config)]
    elif args.shard:
        if len(args.shard) != len(names):
            raise LabelwiseError(f"train: --shard needs one shard per label ({len(names)}), got {len(args.shard)}")
        shards = args.shard
    else:
        shards = [Path(layout("shard", ds=base, label=n)) for n in names]
    runtime_options = dict(
        device=args.device or runtime.get("device", "auto"),
        threads=args.threads or runtime.get("threads"),
        progress_seconds=args.progress_seconds or runtime.get("progress_seconds", 10),
        channels_last=bool(runtime.get("channels_last")) if args.channels_last is None else args.channels_last,
        precision=args.precision or runtime.get("precision", "fp32"),
        packed_kernel=args.packed_kernel or runtime.get("packed_kernel", "auto"),
        cuda_graph=args.cuda_graph or runtime.get("cuda_graph", "auto"),
    )
    watch = bool(runtime.get("tensorboard")) if args.tensorboard is None else args.tensorboard
    if watch:  # the pipeline's folder: logs/<dataset>/tensorboard beside --results, unless given
        logs = None if base is None else Path(args.results).parent / "logs" / dataset_name(config)
        folder = args.tensorboard_dir or (logs is not None and layout("tensorboard", logs=logs))
        if not folder:
            raise LabelwiseError("train --tensorboard true with --settings needs --tensorboard-dir")
        runtime_options["tensorboard"] = Path(folder)
    runtime_options["tensorboard_images"] = (
        runtime.get("tensorboard_images", 0) if args.tensorboard_images is None else args.tensorboard_images
    )
    budget, seed = Budget(**settings["budget"]), int(settings["seed"])
    # One job: the conditional model over every shard, or K labels (K=1: one label) packed together.
    labels = None if conditional else names
    train_job(shards, args.model, settings["model"], budget, seed, outputs, labels=labels, **runtime_options)


def _train_command(model: str, label) -> str:
    """The `labelwise` stage that writes a model's generator or log of `label`, for _require's hint."""
    return f"train --model {model}" + ("" if models.get(model).conditional else f" --label {label}")


def cmd_sample(args) -> None:
    from .sample import sample_label

    config = _config(args)
    ds, model = _dataset_dir(args, config), _model(args, config)
    from .data import load_meta

    meta = load_meta(_require([Path(layout("meta", ds=ds))], "prepare")[0])
    if args.label >= len(meta["class_names"]):
        raise LabelwiseError(f"sample --label {args.label}: {ds} has labels 0..{len(meta['class_names']) - 1}")
    name = model_files(model, [args.label])[0]  # a conditional model: one generator for all labels
    generator = Path(layout("generator", ds=ds, model=model, label=name))
    evaluation = config["evaluation"]
    sample_label(
        _require([generator], _train_command(model, args.label))[0],
        Path(layout("samples", ds=ds, model=model, label=args.label)),
        evaluation["samples_per_label"],
        config["seed"],
        label=args.label,
        class_name=meta["class_names"][args.label],
        device=config["runtime"]["device"],
        threads=config["runtime"]["threads"],
        batch_size=evaluation["batch_size"],
    )


def cmd_grid(args) -> None:
    from .plots import sample_grid

    config = _config(args)
    ds, model = _dataset_dir(args, config), _model(args, config)
    samples = _require(
        [Path(layout("samples", ds=ds, model=model, label=k)) for k in _labels(config)],
        f"sample --model {model} --label {{stem}}",
    )  # the configured labels, as the rule
    sample_grid(
        samples,
        _figure(ds, f"samples_{model}"),
        columns=config["figures"]["grid_columns"],
        dpi=config["figures"]["dpi"],
        title=f"{models.title(model)} samples, {dataset_name(config)}",
    )


def cmd_classifier(args) -> None:
    from .metrics.classifier import train_classifier

    config = _config(args)
    ds = _dataset_dir(args, config)
    labels = _labels(config, sharded=True)
    shards = _require([Path(layout("shard", ds=ds, label=k)) for k in labels], "prepare")
    train_classifier(
        dict(zip(labels, shards)),
        Path(layout("classifier", ds=ds)),
        epochs=config["evaluation"]["classifier_epochs"],
        seed=config["seed"],
        device=_device(config),
    )


def cmd_evaluate(args) -> None:
    """Real statistics missing from <dataset>/stats are computed and cached by `evaluate_model`."""
    from .metrics import evaluate_model, write_metrics

    config = _config(args)
    ds, model, labels = _dataset_dir(args, config), _model(args, config), _labels(config)
    shards = _require([Path(layout("shard", ds=ds, label=k)) for k in labels], "prepare")
    samples = _require(
        [Path(layout("samples", ds=ds, model=model, label=k)) for k in labels],
        f"sample --model {model} --label {{stem}}",
    )
    classifier = _require([Path(layout("classifier", ds=ds))], "classifier")[0]
    metrics = evaluate_model(
        model,
        dict(zip(labels, samples)),
        dict(zip(labels, shards)),
        stats_dir=Path(layout("stats_dir", ds=ds)),
        classifier_path=classifier,
        settings=config["evaluation"],
        device=_device(config),
    )
    write_metrics(
        metrics, Path(layout("metrics", ds=ds, model=model)), Path(layout("metrics_table", ds=ds, model=model))
    )


def cmd_curves(args) -> None:
    from .plots import training_curves

    config = _config(args)
    ds, model = _dataset_dir(args, config), _model(args, config)
    logs = _require(
        [Path(layout("train_log", ds=ds, model=model, label=n)) for n in model_files(model, _labels(config))],
        _train_command(model, "{stem}"),
    )
    training_curves(
        logs,
        _figure(ds, f"training_curves_{model}"),
        dpi=config["figures"]["dpi"],
        title=f"{models.title(model)} training, {dataset_name(config)}",
    )


def cmd_compare(args) -> None:
    from .plots import metrics_comparison

    config = _config(args)
    metrics_comparison(
        _evaluated(args, config),
        _figure(_dataset_dir(args, config), "metrics_comparison"),
        dpi=config["figures"]["dpi"],
        title=f"Models compared, {dataset_name(config)}",
    )


def cmd_table(args) -> None:
    from .tables import write_tables

    config = _config(args)
    out = _dataset_dir(args, config) / "paper" / "metrics_table"
    write_tables(
        _evaluated(args, config),
        *(out.with_suffix(f".{ext}") for ext in ("csv", "md", "tex")),
        caption=paper_table_caption(config, len(_labels(config))),
    )


def _generator_labels(path: Path) -> tuple[str | None, list[int]]:
    """(model, labels) a generator file holds: one label, or a conditional model's labels."""
    from .train.generator_files import read_generator_file

    payload = read_generator_file(path)  # checked: any file that is not a generator is one line
    return payload["model"], list(payload["labels"]) if "labels" in payload else [payload["label"]]


def _generate_sources(args) -> tuple[str, list[tuple[Path, int]]]:
    """The model name and the (generator file, label) pairs that `labelwise generate` draws from."""
    wanted = None if args.label in (None, ["all"]) else args.label
    if wanted is not None:
        try:
            wanted = [int(k) for k in wanted]
        except ValueError:
            raise LabelwiseError(f"generate --label takes label numbers or 'all', got {' '.join(args.label)}") from None
    if args.generator:  # a given .pt: one label's generator, or the conditional model's
        model, held = _generator_labels(Path(args.generator))
        model = args.model or model or Path(args.generator).stem
        missing = [k for k in (wanted or []) if k not in held]
        if missing:
            raise LabelwiseError(f"{args.generator} holds label(s) {held}, not {missing}; choose --label among them")
        return model, [(Path(args.generator), k) for k in (wanted or held)]
    if not args.config or not args.model:
        raise LabelwiseError("generate needs --config and --model (the pipeline's generators) or --generator FILE.pt")
    config = _config(args)
    model, ds, labels = _model(args, config), _dataset_dir(args, config), _labels(config)
    missing = [k for k in (wanted or []) if k not in labels]
    if missing:
        raise LabelwiseError(
            f"label(s) {missing} are not among the configured labels {labels} of {_config_names(args)}"
        )
    return model, [
        (Path(layout("generator", ds=ds, model=model, label=model_files(model, [k])[0])), k) for k in (wanted or labels)
    ]


def cmd_generate(args) -> None:
    from .generate import generate_images

    results, outdir = Path(args.results).resolve(), Path(args.outdir).resolve()
    if outdir == results or results in outdir.parents:
        raise LabelwiseError(
            f"--outdir {args.outdir} is inside the pipeline's results folder {args.results}; "
            "choose a folder outside it (generate never writes the pipeline's files)"
        )
    model, sources = _generate_sources(args)
    paths = _require([p for p, _ in sources], _train_command(model, "{stem}"))
    written = generate_images(
        list(zip(paths, (k for _, k in sources))),
        model,
        args.n,
        args.seed,
        outdir,
        device=args.device,
        grid=args.grid,
        batch_size=args.batch_size,
    )
    log.info("wrote %d PNG file(s) to %s", len(written), outdir)


def _true_or_false(text: str) -> bool:
    """A boolean option's value as the rules pass it ({config[runtime][...]} gives True/False)."""
    words = {"true": True, "false": False}
    if text.lower() not in words:
        raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")
    return words[text.lower()]


def _add_switch(parser: argparse.ArgumentParser, option: str, help_text: str) -> None:
    """A boolean option given alone (true) or with true|false, as the rules pass config booleans."""
    parser.add_argument(option, nargs="?", const=True, type=_true_or_false, metavar="true|false", help=help_text)


class ArgumentParser(argparse.ArgumentParser):
    """argparse, with a bad option as one LabelwiseError line (argparse prints the usage too)."""

    def error(self, message: str):
        raise LabelwiseError(f"{self.prog}: {message}; see {self.prog} --help")


def _int_in(low: int, high: int, what: str = "an integer"):
    """An argparse type: an integer in [low, high]."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{value} is outside {low}..{high:,}")
        return value

    return parse


def _seconds(text: str) -> float:
    """An argparse type: a finite number of seconds in (0, one day]."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0 < value <= 86400:  # NaN fails both comparisons
        raise argparse.ArgumentTypeError(f"{text} is not a number of seconds in (0, 86400]")
    return value


# Bounds of command-line values that allocate or that a seed takes (the config's are in the schema).
MAX_LABEL = 1_000_000
MAX_SEED = 2**63 - 1
MAX_THREADS = 1024
MAX_GENERATE = 100_000  # images per label of `labelwise generate` (the memory estimate comes first)
MAX_BATCH = 4096
MAX_ITERATIONS = 10_000_000  # as budget.iterations in the schema


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="labelwise", description="Per-label GAN training: run a pipeline stage without Snakemake.")
    p.add_argument("--version", action="version", version=f"labelwise {__import__('labelwise').__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="STAGE")

    def stage(name, func, help, model=False, config_required=True):
        sp = sub.add_parser(name, help=help)
        sp.add_argument(
            "--config",
            nargs="+",
            required=config_required,
            metavar="FILE",
            help="config YAML file(s), composed as Snakemake's --configfile: schema defaults, then each file in order",
        )
        sp.add_argument("--results", default="results", help="results directory (default: results)")
        sp.add_argument("--log-file", help="also write log lines to this file")
        if model:
            sp.add_argument("--model", required=True)
        sp.set_defaults(func=func)
        return sp

    stage("prepare", cmd_prepare, "read the raw dataset once and write per-label HDF5 shards + meta.json")

    sp = stage(
        "train",
        cmd_train,
        "train one model on one label's shard, or on several at once (resumes from checkpoints)",
        config_required=False,
    )
    sp.add_argument("--model", required=True, help="wcgan | dccgan (one label) | cgan (all given shards)")
    sp.add_argument(
        "--label",
        type=_int_in(0, MAX_LABEL, "a label number"),
        nargs="+",
        help="the label to train (per-label models); several: trained at once as one packed computation",
    )
    sp.add_argument(
        "--settings", help="JSON {model, budget, seed} (what the Snakemake rule passes) instead of --config"
    )
    sp.add_argument(
        "--shard",
        nargs="+",
        help="input shard(s), one per label (default: <results>/<dataset>/shards/<label>.h5; cgan: all)",
    )
    sp.add_argument("--generator", nargs="+", help="output generator weights (.pt), one per label")
    sp.add_argument("--log", nargs="+", help="output training log (.csv), one per label")
    sp.add_argument(
        "--checkpoints",
        nargs="+",
        help="checkpoint directory, one per label (not a Snakemake output: survives failures)",
    )
    sp.add_argument(
        "--snapshots", nargs="+", help="output bundle of the budget.snapshots generator snapshots (.pt), one per label"
    )
    sp.add_argument("--device", help="auto | cpu | cuda | cuda:N (default: runtime.device)")
    sp.add_argument("--threads", type=_int_in(1, MAX_THREADS), help="torch CPU threads (default: runtime.threads)")
    sp.add_argument("--progress-seconds", type=_seconds, help="seconds between progress lines")
    _add_switch(sp, "--channels-last", "NHWC convolutions; alone: true (default: runtime.channels_last)")
    sp.add_argument(
        "--precision",
        choices=("fp32", "bf16"),
        help="bf16: forward passes under bf16 autocast (default: runtime.precision)",
    )
    _add_switch(sp, "--tensorboard", "also write TensorBoard runs; alone: true (default: runtime.tensorboard)")
    sp.add_argument(
        "--tensorboard-dir",
        help="folder of the TensorBoard runs, <dir>/<model>/<label> (default: logs/<dataset>/tensorboard)",
    )
    sp.add_argument(
        "--tensorboard-images",
        type=_int_in(0, MAX_ITERATIONS, "an iteration count"),
        metavar="N",
        help="with --tensorboard: a sample grid every N iterations, 0: none (default: runtime.tensorboard_images)",
    )
    sp.add_argument(
        "--packed-kernel",
        choices=("auto", "grouped", "bmm"),
        help="per-label models: grouped convolutions or batched matrix products (default: runtime.packed_kernel)",
    )
    sp.add_argument(
        "--cuda-graph",
        choices=("auto", "on", "off"),
        help="on CUDA: capture the iteration in a CUDA graph (default: runtime.cuda_graph)",
    )

    sp = stage("sample", cmd_sample, "draw evaluation.samples_per_label images from one label's generator", model=True)
    sp.add_argument("--label", type=_int_in(0, MAX_LABEL, "a label number"), required=True)
    stage("grid", cmd_grid, "sample grid of one model (one row per label), PNG and PDF", model=True)
    stage("classifier", cmd_classifier, "train the label classifier (for the metrics) on the real shards")
    stage("evaluate", cmd_evaluate, "metrics of one model's samples: metrics.json + metrics.csv", model=True)
    stage("curves", cmd_curves, "training curves of one model from its train logs, PNG and PDF", model=True)
    stage("compare", cmd_compare, "metrics comparison figure of every evaluated model, PNG and PDF")
    stage("table", cmd_table, "the papers' metrics table of every evaluated model: CSV, Markdown, LaTeX")

    sp = stage(
        "generate",
        cmd_generate,
        "N images per label from trained generators as PNG files (never touches results/)",
        config_required=False,
    )
    sp.add_argument(
        "--model", help="the model whose generators to use (with --config); with --generator: the file names' prefix"
    )
    sp.add_argument(
        "--generator", help="a generator file (.pt) to use instead of the pipeline's (one label's, or the cgan's)"
    )
    sp.add_argument("--label", nargs="+", help="label number(s), or 'all' (default: all the configured or held labels)")
    sp.add_argument("-n", type=_int_in(1, MAX_GENERATE), default=16, help="images per label (default: 16)")
    sp.add_argument(
        "--seed", type=_int_in(0, MAX_SEED), default=0, help="the same seed gives the same images (default: 0)"
    )
    sp.add_argument("--outdir", required=True, help="folder for <model>_label<k>_<i>.png (outside the results folder)")
    sp.add_argument("--grid", action="store_true", help="also write <model>_grid.png: one row per label")
    sp.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default: auto)")
    sp.add_argument(
        "--batch-size", type=_int_in(1, MAX_BATCH), default=256, help="images per generator call (default: 256)"
    )
    p.stages = sorted(sub.choices)  # the subcommands' names (tests run each one)
    return p


def main(argv=None) -> int:
    """`labelwise ...`: option parsing, the log file, the model plugins and the stage all run inside
    `run_guarded`, so that whatever is wrong with any of them is one line and a non-zero exit."""
    setup_logging()  # stderr, until --log-file is known

    def guarded() -> None:
        args = build_parser().parse_args(argv)
        setup_logging(args.log_file)
        models.load_plugins()
        args.func(args)

    return run_guarded(guarded)


if __name__ == "__main__":
    sys.exit(main())
