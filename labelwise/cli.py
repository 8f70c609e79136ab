"""The `labelwise` command line: every pipeline stage, runnable without Snakemake.

    labelwise prepare --config config.yaml          # raw dataset -> results/<dataset>/shards/*.h5
    labelwise train   --config config.yaml --model wcgan --label 3
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
    from .train import Budget, Outputs, train_label

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
    name = "all" if args.model == "cgan" else args.label  # the one conditional model's files
    outputs = Outputs(
        generator=Path(args.generator or base / args.model / "generators" / f"{name}.pt"),
        log=Path(args.log or base / args.model / "train_logs" / f"{name}.csv"),
        checkpoints=Path(args.checkpoints or base / args.model / "checkpoints" / str(name)),
    )
    if args.snapshots or (base is not None and settings["budget"].get("snapshots")):
        outputs.snapshots = Path(args.snapshots or base / args.model / "snapshots" / f"{name}.pt")
    if args.model == "cgan":  # one conditional model over every given shard
        shard = args.shard or sorted((base / "shards").glob("*.h5"), key=lambda p: int(p.stem))
    elif args.label is None:
        raise LabelwiseError(f"train --model {args.model} needs --label")
    else:
        shard = args.shard[0] if args.shard else base / "shards" / f"{args.label}.h5"
    train_label(
        shard, args.model, settings["model"], Budget(**settings["budget"]),
        int(settings["seed"]), outputs, label=args.label,
        device=args.device or runtime.get("device", "auto"), threads=args.threads or runtime.get("threads"),
        progress_seconds=args.progress_seconds or runtime.get("progress_seconds", 10),
    )


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

    sp = sub.add_parser("train", help="train one model on one label's shard (resumes from its checkpoints)")
    common(sp, config_required=False)
    sp.add_argument("--model", required=True, help="wcgan | dccgan (one label) | cgan (all given shards)")
    sp.add_argument("--label", type=int, help="the label to train (per-label models)")
    sp.add_argument("--settings", help="JSON {model, budget, seed} (what the Snakemake rule passes) instead of --config")
    sp.add_argument("--shard", nargs="+", help="input shard(s) (default: <results>/<dataset>/shards/<label>.h5; cgan: all)")
    sp.add_argument("--generator", help="output generator weights (.pt)")
    sp.add_argument("--log", help="output training log (.csv)")
    sp.add_argument("--checkpoints", help="checkpoint directory (not a Snakemake output: survives failures)")
    sp.add_argument("--snapshots", help="output bundle of the budget.snapshots generator snapshots (.pt)")
    sp.add_argument("--device", help="auto | cpu | cuda | cuda:N (default: runtime.device)")
    sp.add_argument("--threads", type=int, help="torch CPU threads (default: runtime.threads)")
    sp.add_argument("--progress-seconds", type=float, help="seconds between progress lines")
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
