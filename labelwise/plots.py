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


def samples_side_by_side(samples_by_model, outputs, *, columns: int = 6, title: str | None = None, dpi: int = 150):
    """The sample grids of several models side by side: one panel per model (its short name on top),
    one row per label in every panel (class names on the left of the first), `columns` samples per row.

    `samples_by_model`: model -> its sample files in label order (the same labels for every model)."""
    panels = []
    for model, paths in samples_by_model.items():
        rows, names = [], []
        for path in paths:
            images, attrs = read_images(path)
            rows.append(_row_image(images, columns))
            label = attrs["label"]
            name = attrs.get("class_name") or str(label)
            names.append(name if name == str(label) else f"{label}: {name}")
        gap = np.ones((2, rows[0].shape[1], rows[0].shape[2]), np.float32)  # white rows between labels
        stacked = np.concatenate([part for row in rows for part in (row, gap)][:-1])
        panels.append((model, names, stacked))
    h, w = panels[0][2].shape[:2]
    fig, axes = plt.subplots(1, len(panels), figsize=(0.9 + len(panels) * (w / 45 + 0.2), 0.6 + h / 45), squeeze=False)
    for i, (ax, (model, names, img)) in enumerate(zip(axes[0], panels)):
        ax.imshow(img.squeeze(-1) if img.shape[-1] == 1 else img, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        ax.set_title(short_name(model), fontsize=9, color=model_color(model, i))
        ax.set_xticks([])
        row_h = h / len(names)
        ax.set_yticks([(j + 0.5) * row_h for j in range(len(names))], names if i == 0 else [], fontsize=7)
        ax.tick_params(length=0)
        for spine in ax.spines.values():
            spine.set_visible(False)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.97 if title else 1))
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
    ("classifier", "precision", "precision, classifier features\n(share of samples that look real)", False),
    ("classifier", "recall", "recall, classifier features\n(share of real variety covered)", False),
    ("inception", "fid", "FID (Inception)", True),
    ("inception", "is", "Inception score", False),
    ("inception", "precision", "precision, Inception features", False),
    ("inception", "recall", "recall, Inception features", False),
)
PANELS_PER_ROW = 4


def _pooled_and_per_label(section: dict, key: str):
    value = section.get(key) or {}
    if key == "is":
        return value.get("mean"), []
    per_label = [v for v in (value.get("per_label") or {}).values() if v is not None]
    return value.get("pooled"), per_label


def short_name(model: str) -> str:
    """A model's name in legends and on axes: its title before " (" ("DC-CGAN", "single CGAN")."""
    return models.title(model).split(" (")[0]


def _tick_name(model: str) -> str:
    """The short name on at most two lines, so that four or more models fit under a narrow panel."""
    name = short_name(model)
    return name.replace(" ", "\n", 1) if len(name) > 8 else name


def comparison_figure(runs: list[dict], *, title: str | None = None):
    """The comparison figure of `runs` (metrics.json contents), returned open (`metrics_comparison`
    saves it).  Per panel: each model's pooled value as a bar, its per-label values as dots, the
    value printed above the highest of them; under the panels, one line per model saying what it
    got from the (equal) budget."""
    panels = [
        (sec, key, label, lower)
        for sec, key, label, lower in COMPARED
        if any(r.get(sec, {}).get("status") == "ok" and (r[sec].get(key) or {}) for r in runs)
    ]
    ncols = min(PANELS_PER_ROW, len(panels))
    nrows = -(-len(panels) // ncols)
    panel_width = max(2.9, 0.7 * len(runs) + 1.2)  # room for every model's tick label side by side
    fig, axes = plt.subplots(nrows, ncols, figsize=(panel_width * ncols, 3.4 * nrows), squeeze=False)
    rng = np.random.default_rng(0)
    for ax, (sec, key, label, lower) in zip(axes.flat, panels):
        tops = []
        for i, run in enumerate(runs):
            pooled, per_label = _pooled_and_per_label(run.get(sec, {}), key)
            if per_label:
                ax.scatter(
                    i + rng.uniform(-0.15, 0.15, len(per_label)),
                    per_label,
                    s=10,
                    color="k",
                    zorder=3,
                    label="per label" if i == 0 else None,
                )
            if pooled is not None:
                ax.bar(i, pooled, color=model_color(run["model"], i), alpha=0.6, width=0.6)
                tops.append((i, pooled, max([pooled, *per_label])))
        # Value labels above the highest of bar and dots (never on them), after the limits are known.
        high = max([t for _, _, t in tops], default=1.0)
        ax.set_ylim(0, high * 1.2 if high > 0 else 1.0)
        for i, pooled, top in tops:
            ax.annotate(
                f"{pooled:.3g}",
                (i, top),
                xytext=(0, 4),
                textcoords="offset points",
                ha="center",
                va="bottom",
                fontsize=8,
                zorder=4,
                bbox=dict(boxstyle="round,pad=0.15", fc="white", ec="none", alpha=0.85),
            )
        ax.set_xticks(range(len(runs)), [_tick_name(r["model"]) for r in runs], fontsize=8)
        ax.set_xlim(-0.6, len(runs) - 0.4)
        ax.set_ylabel(label, fontsize=9)
        ax.set_title("lower is better" if lower else "higher is better", fontsize=8, color="0.4")
        ax.grid(axis="y", alpha=0.3)
    for ax in list(axes.flat)[len(panels) :]:
        ax.set_visible(False)
    if any(ax.get_legend_handles_labels()[0] for ax in axes.flat):
        axes[0, 0].legend(fontsize=7, loc="lower left")
    # Under the panels: what each model got from the budget, one line per model.
    lines = []
    for r in runs:
        equal, iterations, gflop, seconds, generator = training_cells(r)
        if iterations != "n/a":
            one = (r.get("training") or {}).get("one_network")
            its = f"{iterations.split()[0]} iterations " + ("of one network" if one else "per label")
            lines.append(f"{short_name(r['model'])}: {its}; {gflop} GFLOP and {seconds} s per label; {generator}")
    notes = {r.get("inception", {}).get("reason") for r in runs if r.get("inception", {}).get("status") == "skipped"}
    if notes:
        first = sorted({n.split(";")[0] for n in notes if n})  # the cause; metrics.json has the full fix
        lines.append("Inception metrics skipped: " + "; ".join(first))
    fig.tight_layout()
    if lines:
        fig.text(0.01, 0.0, "\n".join(lines), fontsize=7, color="0.3", ha="left", va="top")
    n_gen = {sum((r["protocol"].get("n_generated") or {}).values()) for r in runs}
    budgets = sorted({training_cells(r)[0] for r in runs} - {"n/a"})
    equal = f"; equal budget per label: {', '.join(budgets)}" if budgets else ""
    fig.suptitle((title or "") + f"  (n generated per model: {', '.join(map(str, sorted(n_gen)))}{equal})", fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    return fig


def metrics_comparison(metrics_paths, outputs, *, title: str | None = None, dpi: int = 150) -> None:
    """Bars: each model's pooled value; dots: its per-label values. Skipped metrics are said so."""
    import json

    fig = comparison_figure([json.loads(Path(p).read_text()) for p in metrics_paths], title=title)
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


def stability_figure(panels, outputs, *, space: str = "classifier", title: str | None = None, dpi: int = 150) -> None:
    """Stability along training: per model, its final FID minus the best FID along its training (the
    "stability" of fid_vs_time.json, `labelwise.metrics.snapshots.stability`), one dot per seed (run)
    and, over two or more seeds, their mean ± standard deviation as a bar with an error bar.

    `panels`: panel title (a dataset) -> the fid_vs_time.json files of its runs, any models and seeds."""
    import json

    panels = {name: [json.loads(Path(p).read_text()) for p in paths] for name, paths in panels.items()}
    fig, axes = plt.subplots(1, len(panels), figsize=(max(3.6, 1.0 + 0.9 * _models_in(panels)) * len(panels), 3.8))
    axes = np.atleast_1d(axes)
    rng = np.random.default_rng(0)
    for ax, (name, runs) in zip(axes, panels.items()):
        by_model: dict[str, list[dict]] = {}
        for run in runs:
            gap = (run.get("stability") or {}).get(space)
            if gap is not None:
                by_model.setdefault(run["model"], []).append(gap)
        order = models.ordered(by_model)
        seeds = sorted({len(v) for v in by_model.values()})
        for i, model in enumerate(order):
            gaps = np.array([g["final_minus_best"] for g in by_model[model]])
            colour = model_color(model, i)
            if len(gaps) > 1:
                ax.bar(i, gaps.mean(), width=0.6, color=colour, alpha=0.5)
                ax.errorbar(i, gaps.mean(), yerr=gaps.std(ddof=1), color="k", capsize=4, lw=1)
            ax.scatter(i + rng.uniform(-0.12, 0.12, len(gaps)), gaps, s=16, color=colour, edgecolor="k", zorder=3)
        ax.axhline(0, color="0.5", lw=0.8)
        ax.set_xticks(range(len(order)), [_tick_name(m) for m in order], fontsize=8)
        ax.set_xlim(-0.6, max(len(order), 1) - 0.4)
        if ax is axes[0]:  # one label for the row: beside the next panel it would run into this one
            ax.set_ylabel(f"final FID − best FID along training\n({space} features, FID units; 0: ended at its best)")
        ax.set_title(f"{name}: {'/'.join(map(str, seeds)) or 'no'} seed(s) per model", fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(
        (title + "\n" if title else "")
        + "dots: one run each; bars: mean ± std over seeds; the best of the snapshots and the end",
        fontsize=9,
    )
    fig.tight_layout(rect=(0, 0, 1, 0.9 if title else 0.95))  # room for the (two-line) title
    fig.set_dpi(dpi)
    save_figure(fig, outputs)


def _models_in(panels: dict) -> int:
    return max((len({r["model"] for r in runs}) for runs in panels.values()), default=1)
