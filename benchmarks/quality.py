"""Issue 13's measured comparison: per-label GAN variants at equal counted compute, on a CPU.

For each dataset (mnist5k, cifar10-mini) and each variant asked for (`VARIANTS`: W-CGAN plain,
+DiffAugment, +EMA, +both, and its tuning round's learning rates, Adam β1 and critic steps; DC-CGAN
at its authors' lr 1e-4 and at the DCGAN paper's 2e-4, with DiffAugment's full or colour-only
policy, with and without EMA) every selected label's GAN is trained with the same
`budget.gflop` (counted FLOPs per label, `labelwise.train.compute`), with generator snapshots at
quarters of the budget.  Each final generator and snapshot is sampled and scored in the label
classifier's feature space (label accuracy, classifier FID pooled over the labels, intra-FID =
mean per-label FID, precision and recall pooled over the labels); Inception is off (about 7 images/s
on this CPU).  Results go to
<out>/<dataset>/quality.json; `--report` gathers every dataset's file into a Markdown table and
the figure FID against training compute (PNG + PDF).

Runs through the package's own functions (the same `train_job`, sampling and `evaluate_model` the
pipeline's jobs call), so one classifier and one set of real statistics serve all variants.  Each
finished training is kept: a rerun skips it.  `make quality` runs the documented configuration
(docs/quality.md).
"""

from __future__ import annotations

import argparse
import json
import logging
import resource
import statistics
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from labelwise.cli import setup_logging  # noqa: E402
from labelwise.data.shards import prepare_dataset  # noqa: E402
from labelwise.metrics import evaluate_model  # noqa: E402
from labelwise.metrics.classifier import train_classifier  # noqa: E402
from labelwise.metrics.snapshots import snapshot_metrics  # noqa: E402
from labelwise.sample import sample_label  # noqa: E402
from labelwise.train import Budget, Outputs, train_job  # noqa: E402

log = logging.getLogger("labelwise.quality")

# config.yaml's CPU-sized networks; the variants add one thing each.
WCGAN = {
    "width": 16,
    "latent_dim": 100,
    "batch_size": 64,
    "lr": 2.0e-4,
    "betas": [0.5, 0.9],
    "critic_steps": 5,
    "gp_lambda": 10.0,
}
DCCGAN = {"width": 16, "latent_dim": 100, "batch_size": 100, "lr": 1.0e-4, "betas": [0.5, 0.999], "critic_steps": 1}
DCCGAN_LR2 = {**DCCGAN, "lr": 2.0e-4}  # the DCGAN paper's rate (config.yaml's DC-CGAN)
EMA = 0.999
DA = {"augment": "diffaugment"}  # the published policy: colour, translation, cutout
DA_COLOUR = {"augment": "diffaugment", "augment_policy": ["color"]}
DA_COLOUR_TRANSLATION = {"augment": "diffaugment", "augment_policy": ["color", "translation"]}
VARIANTS = {  # in the order they run
    "DC-CGAN": ("dccgan", DCCGAN),
    "DC-CGAN + EMA": ("dccgan", {**DCCGAN, "ema": EMA}),
    "DC-CGAN + DiffAugment + EMA": ("dccgan", {**DCCGAN, **DA, "ema": EMA}),
    "DC-CGAN + DiffAugment (colour) + EMA": ("dccgan", {**DCCGAN, **DA_COLOUR, "ema": EMA}),
    "DC-CGAN lr 2e-4": ("dccgan", DCCGAN_LR2),
    "DC-CGAN lr 2e-4 + DiffAugment": ("dccgan", {**DCCGAN_LR2, **DA}),
    "DC-CGAN lr 2e-4 + DiffAugment (colour, translation)": ("dccgan", {**DCCGAN_LR2, **DA_COLOUR_TRANSLATION}),
    "DC-CGAN lr 2e-4 + DiffAugment + EMA": ("dccgan", {**DCCGAN_LR2, **DA, "ema": EMA}),
    "DC-CGAN lr 2e-4 + DiffAugment (colour) + EMA": ("dccgan", {**DCCGAN_LR2, **DA_COLOUR, "ema": EMA}),
    "DC-CGAN lr_g 4e-4, lr_d 1e-4 + DiffAugment": ("dccgan", {**DCCGAN, "lr_g": 4.0e-4, "lr_d": 1.0e-4, **DA}),
    "W-CGAN": ("wcgan", WCGAN),
    "W-CGAN + DiffAugment": ("wcgan", {**WCGAN, **DA}),
    "W-CGAN + EMA": ("wcgan", {**WCGAN, "ema": EMA}),
    "W-CGAN + DiffAugment + EMA": ("wcgan", {**WCGAN, **DA, "ema": EMA}),
    # W-CGAN's own tuning round (issue 25, `make quality-wcgan`): the learning rate, Adam's β1 (the
    # WGAN-GP paper's 0.5 and its ResNet model's 0), fewer critic steps with a faster critic (a
    # two-timescale update; 1e-4 / 3e-4 at one step is the TTUR paper's WGAN-GP setting).
    "W-CGAN lr 1e-4": ("wcgan", {**WCGAN, "lr": 1.0e-4}),
    "W-CGAN lr 4e-4": ("wcgan", {**WCGAN, "lr": 4.0e-4}),
    "W-CGAN betas (0, 0.9)": ("wcgan", {**WCGAN, "betas": [0.0, 0.9]}),
    "W-CGAN 2 critic steps": ("wcgan", {**WCGAN, "critic_steps": 2}),
    "W-CGAN 2 critic steps, lr_d 4e-4": ("wcgan", {**WCGAN, "critic_steps": 2, "lr_g": 2.0e-4, "lr_d": 4.0e-4}),
    "W-CGAN 1 critic step, lr_g 1e-4, lr_d 3e-4": (
        "wcgan",
        {**WCGAN, "critic_steps": 1, "lr_g": 1.0e-4, "lr_d": 3.0e-4},
    ),
    "W-CGAN 1 critic step, lr_d 6e-4": ("wcgan", {**WCGAN, "critic_steps": 1, "lr_g": 2.0e-4, "lr_d": 6.0e-4}),
    # Its second round: the first round's best directions (a higher rate; fewer critic steps with a
    # faster critic) taken further.
    "W-CGAN lr 8e-4": ("wcgan", {**WCGAN, "lr": 8.0e-4}),
    "W-CGAN 2 critic steps, lr_g 4e-4, lr_d 8e-4": (
        "wcgan",
        {**WCGAN, "critic_steps": 2, "lr_g": 4.0e-4, "lr_d": 8.0e-4},
    ),
    "W-CGAN 1 critic step, lr_g 4e-4, lr_d 1.2e-3": (
        "wcgan",
        {**WCGAN, "critic_steps": 1, "lr_g": 4.0e-4, "lr_d": 1.2e-3},
    ),
}
SNAPSHOTS = (0.25, 0.5, 0.75, 1.0)
SOURCES = {"mnist5k": ("mnist5k", None), "cifar10-mini": ("cifar10", REPO.parent / "shared/data/cifar10-mini")}


def slug(name: str) -> str:
    """A variant's folder name: "DC-CGAN lr 2e-4 + DiffAugment (colour) + EMA" -> dccganlr2e4+diffaugmentcolour+ema."""
    for old, new in ((" + ", "+"), (", ", "_"), (" ", ""), ("-", ""), ("(", ""), (")", "")):
        name = name.replace(old, new)
    return name.lower()


def run_dataset(
    name: str, labels: list[int], gflop: float, seeds: list[int], out: Path, samples: int, variants: list[str]
) -> Path:
    source, root = SOURCES[name]
    folder = out / name
    if not (folder / "meta.json").is_file():
        prepare_dataset(source, folder, root=root)
    shards = {k: folder / "shards" / f"{k}.h5" for k in range(10)}
    classifier = folder / "classifier.pt"
    if not classifier.is_file():
        train_classifier(shards, classifier, epochs=5, seed=0)
    settings = {"inception": "off"}
    result = {
        "dataset": name,
        "labels": labels,
        "gflop_per_label": gflop,
        "seeds": seeds,
        "samples_per_label": samples,
        "variants": {},
    }
    for variant in variants:
        model, model_settings = VARIANTS[variant]
        runs = []
        for seed in seeds:
            base = folder / slug(variant) / f"seed{seed}"
            cpu = 0.0
            for label in labels:
                outs = Outputs(
                    base / f"g{label}.pt", base / f"log{label}.csv", base / f"ckpt{label}", base / f"snap{label}.pt"
                )
                if not (outs.generator.is_file() and outs.snapshots.is_file()):
                    before = resource.getrusage(resource.RUSAGE_SELF).ru_utime
                    train_job(
                        [shards[label]],
                        model,
                        model_settings,
                        Budget(iterations=10**7, gflop=gflop, checkpoint_every=10**7, snapshots=SNAPSHOTS),
                        seed,
                        [outs],
                        device="cpu",
                        threads=1,
                        progress_seconds=60,
                    )
                    cpu += resource.getrusage(resource.RUSAGE_SELF).ru_utime - before
                sample_label(outs.generator, base / f"samples{label}.h5", samples, seed, device="cpu", threads=1)
            chosen = {k: shards[k] for k in labels}
            metrics = evaluate_model(
                model,
                {k: base / f"samples{k}.h5" for k in labels},
                chosen,
                stats_dir=folder / "stats",
                classifier_path=classifier,
                settings=settings,
                device="cpu",
            )
            curve = snapshot_metrics(
                model,
                {k: base / f"snap{k}.pt" for k in labels},
                chosen,
                stats_dir=folder / "stats",
                classifier_path=classifier,
                samples_per_label=samples,
                seed=seed,
                settings=settings,
                device="cpu",
            )
            record = metrics["training"]
            per_it = record["flops_per_iteration"]
            runs.append(
                {
                    "seed": seed,
                    "label_accuracy": metrics["classifier"]["label_accuracy"],
                    "fid": metrics["classifier"]["fid"]["pooled"],
                    "intra_fid": metrics["classifier"]["fid"]["intra_fid"],
                    "precision": metrics["classifier"]["precision"]["pooled"],
                    "recall": metrics["classifier"]["recall"]["pooled"],
                    "fid_per_label": metrics["classifier"]["fid"]["per_label"],
                    "training": record,
                    "train_cpu_seconds_this_run": cpu,
                    "curve": [
                        {
                            "iteration": p["iteration"],
                            "gflop": p["iteration"] * per_it / 1e9,
                            "wall_seconds": p["elapsed_seconds"],
                            "fid": p["classifier"]["fid"]["pooled"],
                            "intra_fid": p["classifier"]["fid"]["intra_fid"],
                        }
                        for p in curve["points"]
                    ],
                }
            )
            log.info(
                "%s %s seed %d: label accuracy %.3f, classifier FID %.2f",
                name,
                variant,
                seed,
                runs[-1]["label_accuracy"]["pooled"],
                runs[-1]["fid"],
            )
        result["variants"][variant] = {"model": model, "settings": model_settings, "runs": runs}
        (folder / "quality.json").write_text(json.dumps(result, indent=1))
    return folder / "quality.json"


def _spread(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.3g}"
    return f"{statistics.mean(values):.3g} ± {statistics.stdev(values):.2g}"


def report(files: list[Path], markdown: Path, figure: Path) -> None:
    """The Markdown table (mean ± standard deviation over labels × seeds) and the figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lines = [
        "| dataset | variant | iterations / label | GFLOP / label | train s / label (wall) | label accuracy | "
        "classifier FID | classifier intra-FID | precision | recall |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    results = [json.loads(Path(f).read_text()) for f in files]
    colours = plt.get_cmap("tab20")  # one colour per variant, the same in every panel and figure
    # The legend goes below each panel (the variants' names are long and the curves fill the axes).
    rows = max(len(r["variants"]) for r in results) if results else 1
    fig, axes = plt.subplots(1, len(results), figsize=(5.6 * len(results), 4.0 + 0.2 * rows), squeeze=False)
    for ax, res in zip(axes[0], results):
        for variant, v in res["variants"].items():
            runs = v["runs"]
            acc = [a for r in runs for a in r["label_accuracy"]["per_label"].values()]
            fid = [r["fid"] for r in runs]
            intra = [f for r in runs for f in r["fid_per_label"].values()]
            its = runs[0]["training"]["per_label"]
            it = next(iter(its.values()))["iterations"]
            secs = statistics.mean(x["seconds"] for r in runs for x in r["training"]["per_label"].values())
            gflop = runs[0]["training"]["total"]["gflop"] / len(its)
            # Precision and recall (pooled; spread over the seeds): results scored before they existed have none.
            prc = [[r[k] for r in runs if r.get(k) is not None] for k in ("precision", "recall")]
            lines.append(
                f"| {res['dataset']} | {variant} | {it} | {gflop:.0f} | "
                f"{secs:.0f} | {_spread(acc)} | {_spread(fid)} | {_spread(intra)} | "
                + " | ".join(_spread(v) if v else "n/a" for v in prc)
                + " |"
            )
            xs = [p["gflop"] for p in runs[0]["curve"]]
            ys = [statistics.mean(r["curve"][i]["fid"] for r in runs) for i in range(len(xs))]
            ax.plot(
                xs,
                ys,
                marker="o",
                label=variant,
                linestyle="--" if v["model"] == "dccgan" else "-",
                color=colours(list(VARIANTS).index(variant) % 20) if variant in VARIANTS else None,
            )
        ax.set_xlabel("training compute per label (counted GFLOP)")
        # Training time: the CPU seconds those FLOPs took here (user time of the training calls, so
        # the machine's load does not enter), one thread.
        runs = [r for v in res["variants"].values() for r in v["runs"] if r["train_cpu_seconds_this_run"] > 0]
        if runs:
            gflop = sum(r["training"]["total"]["gflop"] for r in runs)
            rate = gflop / sum(r["train_cpu_seconds_this_run"] for r in runs)
            top = ax.secondary_xaxis("top", functions=(lambda g, r=rate: g / r, lambda t, r=rate: t * r))
            top.set_xlabel(f"training time per label (CPU seconds, 1 thread; {rate:.0f} GFLOP/s measured)")
        ax.set_ylabel("classifier FID (pooled over labels; lower is better)")
        ax.grid(alpha=0.3)
        ax.set_title(f"{res['dataset']}, labels {res['labels']}, seeds {res['seeds']}", fontsize=9)
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.16), frameon=False)
    fig.tight_layout()
    figure.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(figure.with_suffix(".png"), dpi=150)
    fig.savefig(figure.with_suffix(".pdf"))
    markdown.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", choices=sorted(SOURCES), action="append", help="repeatable; default: both")
    p.add_argument("--labels", type=int, nargs="+", default=[3, 8])
    p.add_argument("--gflop", type=float, default=2000.0, help="counted GFLOP per label, every variant")
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--samples", type=int, default=200, help="generated images per label")
    p.add_argument("--variants", nargs="+", choices=sorted(VARIANTS), default=list(VARIANTS))
    p.add_argument("--out", type=Path, default=REPO / "results" / "quality")
    p.add_argument("--report", action="store_true", help="only gather <out>/*/quality.json into the table and figure")
    p.add_argument("--table", type=Path, default=REPO / "docs" / "quality_table.md")
    p.add_argument("--figure", type=Path, default=REPO / "docs" / "figures" / "quality_fid_vs_compute.png")
    a = p.parse_args()
    setup_logging()
    files = []
    for name in a.dataset or sorted(SOURCES, reverse=True):
        if not a.report:
            run_dataset(name, a.labels, a.gflop, a.seeds, a.out, a.samples, a.variants)
        if (a.out / name / "quality.json").is_file():
            files.append(a.out / name / "quality.json")
    report(files, a.table, a.figure)


if __name__ == "__main__":
    main()
