"""Figures for people: sample grids, training curves, metric comparisons, FID against time; PNG and PDF.

Text in figures is drawn as given.  Class names come from folder names and dataset names from the
config, and matplotlib would parse a `$…$` in them as math (a folder `cost $\\foo$ x` crashed the
sample grid with a mathtext traceback) or hand them to LaTeX (text.usetex in a user's matplotlibrc).
So `save_figure`, which writes every labelwise figure, turns math text and usetex off on every text
of the figure but the tick labels (numbers labelwise formats) first: the one rule for user strings
in figures, whatever the rc settings
(tests/faults/test_fault_names.py draws generated hostile names).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from . import models  # noqa: E402
from .images import read_images  # noqa: E402
from .io import atomic_path  # noqa: E402
from .tables import training_cells  # noqa: E402
from .trainlog import read_train_log  # noqa: E402

# Titles and colours: labelwise.models, one colour per model in every figure, whatever the order or
# subset of models a run has.


def model_color(model: str, index: int) -> str:
    registry = models.registry()
    return registry[model].color if model in registry else f"C{3 + index}"


def save_figure(fig, outputs) -> None:
    """Save one figure to each path in `outputs` (format from the suffix), atomically; all its text
    as plain text (module docstring)."""
    ticks = {
        id(t)
        for ax in fig.axes
        for axis in (ax.xaxis, ax.yaxis)
        for tick in axis.get_major_ticks() + axis.get_minor_ticks()
        for t in (tick.label1, tick.label2)
    }
    for text in fig.findobj(matplotlib.text.Text):
        if id(text) not in ticks:  # tick labels are ours (log axes draw 10^k as math text)
            text.set_parse_math(False)
            text.set_usetex(False)
    for path in outputs:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, bbox_inches="tight", format=Path(path).suffix.lstrip("."))
    plt.close(fig)


def _row_image(images: np.ndarray, columns: int, gap: int = 2) -> np.ndarray:
    """Tile up to `columns` images side by side (HWC, floats in [0, 1]), with a white gap between them."""
    images = images[:columns]
    c, h, w = images.shape[1:]
    row = np.ones((h, columns * (w + gap) - gap, c), dtype=np.float32)
    for i, img in enumerate(images):
        row[:, i * (w + gap) : i * (w + gap) + w] = img.transpose(1, 2, 0) / 255.0
    return row


def sample_grid(sample_paths, outputs, *, columns: int = 10, title: str | None = None, dpi: int = 150) -> None:
    """One row per label (its class name on the left), `columns` samples per row."""
    rows = []
    for path in sample_paths:
        images, attrs = read_images(path)
        label = attrs.get("label", Path(path).stem)
        rows.append((attrs.get("class_name") or str(label), label, _row_image(images, columns)))
    h, w = rows[0][2].shape[:2]
    fig_w, fig_h = 1.6 + w / 40, 0.45 + len(rows) * h / 40
    fig, axes = plt.subplots(len(rows), 1, figsize=(fig_w, fig_h), squeeze=False)
    for ax, (name, label, img) in zip(axes[:, 0], rows):
        ax.imshow(img.squeeze(-1) if img.shape[-1] == 1 else img, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        for spine in ax.spines.values():
            spine.set_visible(False)
        ax.set_ylabel(
            f"{name}" if name == str(label) else f"{label}: {name}", rotation=0, ha="right", va="center", fontsize=9
        )
    if title:
        fig.suptitle(title, fontsize=10, y=1 - 0.12 / fig_h, va="top")
    fig.subplots_adjust(hspace=0.08, top=1 - 0.4 / fig_h, bottom=0.02)
    fig.set_dpi(dpi)
    save_figure(fig, outputs)


CURVES = (
    ("d_loss", "critic / discriminator loss"),
    ("g_loss", "generator loss"),
    ("wasserstein_estimate", "Wasserstein estimate\nE[D(real)] − E[D(fake)]"),
)


def training_curves(log_paths, outputs, *, title: str | None = None, dpi: int = 150) -> None:
    """Losses and the Wasserstein estimate against iterations (top) and wall time (bottom):
    the mean over labels as a line, mean ± one standard deviation as a band."""
    logs = [read_train_log(p) for p in log_paths]
    n = min(len(log["iteration"]) for log in logs)  # labels stopped by a minutes budget may be shorter
    iterations = logs[0]["iteration"][:n]
    wall = np.mean([log["wall_seconds"][:n] for log in logs], axis=0)
    curves = [(key, label) for key, label in CURVES if not np.all(np.isnan(logs[0][key][:n]))]
    fig, axes = plt.subplots(2, len(curves), figsize=(4.2 * len(curves), 6.2), squeeze=False)
    for col, (key, label) in enumerate(curves):
        values = np.array([log[key][:n] for log in logs])
        mean, std = np.nanmean(values, axis=0), np.nanstd(values, axis=0)
        for row, (x, xlabel) in enumerate(
            ((iterations, "generator iteration"), (wall, "training wall time (s, mean over labels)"))
        ):
            ax = axes[row, col]
            ax.plot(x, mean, color="C0", lw=1.5, label=f"mean over {len(logs)} labels")
            ax.fill_between(x, mean - std, mean + std, color="C0", alpha=0.25, lw=0, label="± 1 std over labels")
            ax.set_xlabel(xlabel)
            ax.set_ylabel(label)
            ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=8, loc="best")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.set_dpi(dpi)
    save_figure(fig, outputs)


# (metrics.json section, metric key, axis label, lower is better)
COMPARED = (
    ("classifier", "label_accuracy", "label accuracy\n(classifier, share of own label)", False),
    ("classifier", "fid", "FID in classifier features", True),
    ("inception", "fid", "FID (Inception)", True),
    ("inception", "is", "Inception score", False),
)


def _pooled_and_per_label(section: dict, key: str):
    value = section.get(key) or {}
    if key == "is":
        return value.get("mean"), []
    per_label = [v for v in (value.get("per_label") or {}).values() if v is not None]
    return value.get("pooled"), per_label


def metrics_comparison(metrics_paths, outputs, *, title: str | None = None, dpi: int = 150) -> None:
    """Bars: each model's pooled value; dots: its per-label values. Skipped metrics are said so."""
    import json

    runs = [json.loads(Path(p).read_text()) for p in metrics_paths]
    panels = [
        (sec, key, label, lower)
        for sec, key, label, lower in COMPARED
        if any(r.get(sec, {}).get("status") == "ok" for r in runs)
    ]
    fig, axes = plt.subplots(1, len(panels), figsize=(3.4 * len(panels), 3.8), squeeze=False)

    # Under each model: what it got from the (equal) budget, per label.
    names = []
    for r in runs:
        equal, iterations, gflop, seconds, generator = training_cells(r)
        names.append(
            models.title(r["model"]).split(" (")[0]
            + ("" if iterations == "n/a" else f"\n{iterations} it\n{gflop} GFLOP, {seconds} s\n{generator}")
        )
    budgets = sorted({training_cells(r)[0] for r in runs} - {"n/a"})
    rng = np.random.default_rng(0)
    for ax, (sec, key, label, lower) in zip(axes[0], panels):
        for i, run in enumerate(runs):
            pooled, per_label = _pooled_and_per_label(run.get(sec, {}), key)
            if pooled is not None:
                ax.bar(i, pooled, color=model_color(run["model"], i), alpha=0.6, width=0.6)
                # Boxed and above the per-label dots, so the value stays readable where they cluster.
                ax.annotate(
                    f"{pooled:.3g}",
                    (i, pooled),
                    ha="center",
                    va="bottom",
                    fontsize=8,
                    zorder=4,
                    bbox=dict(boxstyle="round,pad=0.15", fc="white", ec="none", alpha=0.85),
                )
            if per_label:
                ax.scatter(
                    i + rng.uniform(-0.15, 0.15, len(per_label)),
                    per_label,
                    s=10,
                    color="k",
                    zorder=3,
                    label="per label" if i == 0 else None,
                )
        ax.set_xticks(range(len(runs)), names)
        ax.set_ylabel(label)
        ax.set_title("lower is better" if lower else "higher is better", fontsize=8, color="0.4")
        ax.grid(axis="y", alpha=0.3)
    if any(ax.get_legend_handles_labels()[0] for ax in axes[0]):
        axes[0, 0].legend(fontsize=8, loc="best")
    notes = {r.get("inception", {}).get("reason") for r in runs if r.get("inception", {}).get("status") == "skipped"}
    if notes:
        first = sorted({n.split(";")[0] for n in notes if n})  # the cause; metrics.json has the full fix
        fig.text(
            0.01,
            -0.02,
            "Inception metrics skipped: " + "; ".join(first),
            fontsize=7,
            color="0.3",
            ha="left",
            va="top",
            wrap=True,
        )
    n_gen = {sum((r["protocol"].get("n_generated") or {}).values()) for r in runs}
    equal = f"; equal budget per label: {', '.join(budgets)}" if budgets else ""
    fig.suptitle((title or "") + f"  (n generated per model: {', '.join(map(str, sorted(n_gen)))}{equal})", fontsize=10)
    fig.tight_layout()
    fig.set_dpi(dpi)
    save_figure(fig, outputs)


def fid_vs_time(json_paths, outputs, *, title: str | None = None, dpi: int = 150) -> None:
    """FID against training wall time, one line with markers per model (the models' fid_vs_time.json):
    classifier FID, and a second panel for Inception FID when any model has it. Solid: pooled FID;
    dashed: intra-FID (mean of the per-label FIDs); a star: the end of training (the final
    generators), unless the last snapshot was taken there. Log y when the values span more than a
    factor of 10."""
    import json

    runs = [json.loads(Path(p).read_text()) for p in json_paths]
    spaces = [s for s in ("classifier", "inception") if any(s in r.get("feature_spaces", []) for r in runs)]
    names = {"classifier": "FID in classifier features", "inception": "FID in Inception features"}
    fig, axes = plt.subplots(1, len(spaces), figsize=(5.6 * len(spaces), 4.0), squeeze=False)
    for ax, space in zip(axes[0], spaces):
        values = []
        for i, run in enumerate(runs):
            pts = [p for p in run["points"] if p.get(space)]
            end = run.get("end")
            if (
                end
                and end.get(space)
                and not (pts and set(end["iterations_per_label"].values()) == {pts[-1]["iteration"]})
            ):
                pts = pts + [{**end, "fraction": None, "end": True}]
                ax.plot(
                    end["elapsed_seconds"],
                    end[space]["fid"]["pooled"],
                    "*",
                    color=model_color(run["model"], i),
                    markersize=11,
                )
            t = [p["elapsed_seconds"] for p in pts]
            name = models.title(run["model"]).split(" (")[0]
            for key, style, suffix in (("pooled", "-o", ""), ("intra_fid", "--s", " intra-FID")):
                y = [np.nan if p[space]["fid"][key] is None else p[space]["fid"][key] for p in pts]
                ax.plot(
                    t,
                    y,
                    style,
                    color=model_color(run["model"], i),
                    label=name + suffix,
                    markersize=5 if key == "pooled" else 4,
                    linewidth=1.6 if key == "pooled" else 1.0,
                    alpha=1.0 if key == "pooled" else 0.7,
                )
                values += [v for v in y if np.isfinite(v) and v > 0]
            for p, x in zip(pts, t):  # the budget fraction at each pooled point; "end" where training ended
                fid = p[space]["fid"]["pooled"]
                text = "end" if p.get("end") else None if p.get("fraction") is None else f"{p['fraction']:g}"
                if fid is not None and text is not None:
                    ax.annotate(
                        text,
                        (x, fid),
                        textcoords="offset points",
                        xytext=(3, 3),
                        fontsize=6,
                        color=model_color(run["model"], i),
                    )
        if values and max(values) / min(values) > 10:
            ax.set_yscale("log")
        ax.set_xlabel("training wall time (s; per-label models: mean over labels)")
        ax.set_ylabel(names[space] + " (lower is better)")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7, loc="best")
    skipped = {r.get("inception", {}).get("reason") for r in runs if r.get("inception", {}).get("status") == "skipped"}
    if "inception" not in spaces and any(skipped):
        fig.text(
            0.01,
            -0.02,
            "Inception FID skipped: " + "; ".join(sorted(n.split(";")[0] for n in skipped if n)),
            fontsize=7,
            color="0.3",
            ha="left",
            va="top",
            wrap=True,
        )
    n = sorted({r.get("samples_per_label") for r in runs})
    fig.suptitle(
        (title + "\n" if title else "") + "numbers beside the points: fraction of the iteration budget; "
        f"star (end): the final generators; n generated per label: {', '.join(map(str, n))}",
        fontsize=9,
    )
    fig.tight_layout()
    fig.set_dpi(dpi)
    save_figure(fig, outputs)
