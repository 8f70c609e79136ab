"""The `labelwise` command line: every pipeline stage, runnable without Snakemake.

    labelwise prepare --config config.yaml          # raw dataset -> results/<dataset>/shards/*.h5
    labelwise train   --config config.yaml --model wcgan --label 3
    labelwise train   --config config.yaml --model wcgan --label 0 1 2 3   # one packed job
    labelwise sample  --config config.yaml --model wcgan --label 3
    labelwise grid    --config config.yaml --model wcgan

Paths default to the pipeline's layout under --results (default: results/); the Snakemake rules
pass explicit paths instead.  A LabelwiseError prints one line (`labelwise: error: ...`) and exits 1.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from .errors import LabelwiseError

log = logging.getLogger("labelwise")


def setup_logging(logfile: str | None = None) -> None:
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if logfile:
        Path(logfile).parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(logfile))
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%Y-%m-%d %H:%M:%S")
    for h in handlers:
        h.setFormatter(fmt)
    root = logging.getLogger("labelwise")
    root.handlers[:] = handlers
    root.setLevel(logging.INFO)
    root.propagate = False


def run_guarded(fn, *args, **kwargs) -> int:
    """Run a stage; a LabelwiseError becomes one error line and exit status 1."""
    try:
        fn(*args, **kwargs)
    except LabelwiseError as exc:
        log.error("%s", exc)
        return 1
    return 0


def snakemake_entry(smk, stage) -> None:
    """Entry point for `script:` rules: log to the rule's log file, run `stage(smk)`, exit 1 on bad input.

    Torch and the BLAS libraries get the rule's `threads` and no more: on a shared node, every
    job spinning up one thread per core slows them all down several-fold.
    """
    from threadpoolctl import threadpool_limits

    from .device import set_threads

    setup_logging(smk.log[0] if smk.log else None)
    set_threads(smk.threads)
    with threadpool_limits(limits=smk.threads):
        code = run_guarded(stage, smk)
    sys.exit(code)


# --- helpers shared by the subcommands ---------------------------------------------------------

def _config(args) -> dict:
    from .config import load_config

    return load_config(args.config)


def dataset_name(config: dict) -> str:
    return config["data"]["name"] or config["data"]["source"]


def _dataset_dir(args, config) -> Path:
    return Path(args.results) / dataset_name(config)


# --- subcommands ---------------------------------------------------------------------------------

def cmd_prepare(args) -> None:
    from .data import prepare_dataset

    config = _config(args)
    d = config["data"]
    labels = None if d["labels"] == "all" or d["source"] != "imagefolder" else d["labels"]
    prepare_dataset(d["source"], str(_dataset_dir(args, config)), root=d["root"], labels=labels,
                    resolution=d["resolution"], download=d["download"], name=dataset_name(config))


def cmd_train(args) -> None:
    from .train import Budget, Outputs, train_label, train_packed

    if args.settings:  # the Snakemake rule: settings as JSON, every path explicit
        settings, runtime = json.loads(args.settings), {}
        missing = [f"--{k}" for k in ("shard", "generator", "log", "checkpoints") if not getattr(args, k)]
        if missing:
            raise LabelwiseError(f"train with --settings needs {', '.join(missing)}")
        base = None
    elif args.config:
        config = _config(args)
        if args.model not in config["models"]:
            raise LabelwiseError(f"model {args.model!r} is not configured under models: in {args.config}")
        settings = {"model": config["models"][args.model], "budget": config["budget"], "seed": config["seed"]}
        runtime = config["runtime"]
        base = _dataset_dir(args, config)
    else:
        raise LabelwiseError("train needs --config (or --settings with explicit paths)")
    if args.model == "cgan":
        names: list = ["all"]  # the one conditional model's files
    elif not args.label:
        raise LabelwiseError(f"train --model {args.model} needs --label")
    else:
        names = list(args.label)
    per_name = {"generator": "generators/{}.pt", "log": "train_logs/{}.csv", "checkpoints": "checkpoints/{}"}
    with_snapshots = bool(args.snapshots or (base is not None and settings["budget"].get("snapshots")))
    if with_snapshots:
        per_name["snapshots"] = "snapshots/{}.pt"

    def paths(key: str) -> list[Path]:
        given = getattr(args, key)
        if given is None:
            return [base / args.model / per_name[key].format(n) for n in names]
        if len(given) != len(names):
            raise LabelwiseError(f"train: --{key} needs one path per label ({len(names)}), got {len(given)}")
        return [Path(g) for g in given]

    columns = {key: paths(key) for key in per_name}
    outputs = [Outputs(**{key: columns[key][i] for key in per_name}) for i in range(len(names))]
    if args.model == "cgan":  # one conditional model over every given shard
        shards = args.shard or sorted((base / "shards").glob("*.h5"), key=lambda p: int(p.stem))
    elif args.shard:
        if len(args.shard) != len(names):
            raise LabelwiseError(f"train: --shard needs one shard per label ({len(names)}), got {len(args.shard)}")
        shards = args.shard
    else:
        shards = [base / "shards" / f"{n}.h5" for n in names]
    common = dict(
        device=args.device or runtime.get("device", "auto"), threads=args.threads or runtime.get("threads"),
        progress_seconds=args.progress_seconds or runtime.get("progress_seconds", 10),
        channels_last=args.channels_last or bool(runtime.get("channels_last")),
    )
    budget, seed = Budget(**settings["budget"]), int(settings["seed"])
    if args.model == "cgan":
        train_label(shards, args.model, settings["model"], budget, seed, outputs[0], **common)
    elif len(names) == 1:
        train_label(shards[0], args.model, settings["model"], budget, seed, outputs[0], label=names[0], **common)
    else:  # several labels: one process, one packed computation, the same results up to rounding
        train_packed(shards, args.model, settings["model"], budget, seed, outputs, labels=names, **common)


def cmd_sample(args) -> None:
    from .sample import sample_label

    config = _config(args)
    ds = _dataset_dir(args, config)
    meta = json.loads((ds / "meta.json").read_text())
    sample_label(ds / args.model / "generators" / f"{args.label}.pt", ds / args.model / "samples" / f"{args.label}.h5",
                 config["evaluation"]["samples_per_label"], config["seed"], class_name=meta["class_names"][args.label],
                 device=config["runtime"]["device"], threads=config["runtime"]["threads"])


def cmd_grid(args) -> None:
    from .plots import MODEL_TITLES, sample_grid

    config = _config(args)
    ds = _dataset_dir(args, config)
    labels = sorted(int(p.stem) for p in (ds / args.model / "samples").glob("*.h5"))
    if not labels:
        raise LabelwiseError(f"no samples under {ds / args.model / 'samples'}; run `labelwise sample` first")
    out = ds / "figures" / f"samples_{args.model}"
    sample_grid([ds / args.model / "samples" / f"{k}.h5" for k in labels], [out.with_suffix(".png"), out.with_suffix(".pdf")],
                columns=config["figures"]["grid_columns"], dpi=config["figures"]["dpi"],
                title=f"{MODEL_TITLES.get(args.model, args.model)} samples, {dataset_name(config)}")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="labelwise", description="Per-label GAN training: run a pipeline stage without Snakemake.")
    p.add_argument("--version", action="version", version=f"labelwise {__import__('labelwise').__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="STAGE")

    def common(sp, config_required=True):
        sp.add_argument("--config", required=config_required, help="config YAML (validated; defaults filled)")
        sp.add_argument("--results", default="results", help="results directory (default: results)")
        sp.add_argument("--log-file", help="also write log lines to this file")

    sp = sub.add_parser("prepare", help="read the raw dataset once and write per-label HDF5 shards + meta.json")
    common(sp)
    sp.set_defaults(func=cmd_prepare)

    sp = sub.add_parser("train", help="train one model on one label's shard, or on several at once (resumes from checkpoints)")
    common(sp, config_required=False)
    sp.add_argument("--model", required=True, help="wcgan | dccgan (one label) | cgan (all given shards)")
    sp.add_argument("--label", type=int, nargs="+",
                    help="the label to train (per-label models); several: trained at once as one packed computation")
    sp.add_argument("--settings", help="JSON {model, budget, seed} (what the Snakemake rule passes) instead of --config")
    sp.add_argument("--shard", nargs="+", help="input shard(s), one per label (default: <results>/<dataset>/shards/<label>.h5; cgan: all)")
    sp.add_argument("--generator", nargs="+", help="output generator weights (.pt), one per label")
    sp.add_argument("--log", nargs="+", help="output training log (.csv), one per label")
    sp.add_argument("--checkpoints", nargs="+", help="checkpoint directory, one per label (not a Snakemake output: survives failures)")
    sp.add_argument("--snapshots", nargs="+", help="output bundle of the budget.snapshots generator snapshots (.pt), one per label")
    sp.add_argument("--device", help="auto | cpu | cuda | cuda:N (default: runtime.device)")
    sp.add_argument("--threads", type=int, help="torch CPU threads (default: runtime.threads)")
    sp.add_argument("--progress-seconds", type=float, help="seconds between progress lines")
    sp.add_argument("--channels-last", action="store_true", help="NHWC convolutions (default: runtime.channels_last)")
    sp.set_defaults(func=cmd_train)

    sp = sub.add_parser("sample", help="draw evaluation.samples_per_label images from one label's generator")
    common(sp)
    sp.add_argument("--model", required=True)
    sp.add_argument("--label", type=int, required=True)
    sp.set_defaults(func=cmd_sample)

    sp = sub.add_parser("grid", help="sample grid of one model (one row per label), PNG and PDF")
    common(sp)
    sp.add_argument("--model", required=True)
    sp.set_defaults(func=cmd_grid)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.log_file)
    return run_guarded(args.func, args)


if __name__ == "__main__":
    sys.exit(main())
