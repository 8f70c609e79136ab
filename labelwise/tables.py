"""The papers' comparison table: one row per model, pooled metrics (precision and recall included), as
CSV, Markdown and LaTeX."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from . import models
from .io import write_text

# (column header, metrics.json section, path inside it, format)
COLUMNS = (
    ("label accuracy", "classifier", ("label_accuracy", "pooled"), "{:.3f}"),
    ("classifier FID", "classifier", ("fid", "pooled"), "{:.2f}"),
    ("classifier intra-FID", "classifier", ("fid", "intra_fid"), "{:.2f}"),
    ("classifier precision", "classifier", ("precision", "pooled"), "{:.3f}"),
    ("classifier recall", "classifier", ("recall", "pooled"), "{:.3f}"),
    ("classifier IS", "classifier", ("is",), "is"),
    ("Inception IS", "inception", ("is",), "is"),
    ("Inception FID", "inception", ("fid", "pooled"), "{:.2f}"),
    ("Inception intra-FID", "inception", ("fid", "intra_fid"), "{:.2f}"),
    ("Inception precision", "inception", ("precision", "pooled"), "{:.3f}"),
    ("Inception recall", "inception", ("recall", "pooled"), "{:.3f}"),
    ("KID ×10³", "inception", ("kid",), "kid"),
)


def _cell(metrics: dict, section: str, path: tuple, fmt: str) -> str:
    value = metrics.get(section, {})
    if value.get("status") != "ok":
        return "n/a"
    for key in path:
        value = (value or {}).get(key)
    if value is None:
        return "n/a"
    if fmt == "is":
        return f"{value['mean']:.2f} ± {value['std']:.2f}"
    if fmt == "kid":
        return f"{1e3 * value['mean']:.2f} ± {1e3 * value['std']:.2f}"
    return fmt.format(value)


# What each model got from the budget (metrics.json "training", from the generator files).
TRAINING_COLUMNS = ("equal budget", "iterations / label", "GFLOP / label", "train s / label", "sampled generator")


def training_cells(metrics: dict) -> list[str]:
    """The TRAINING_COLUMNS cells: which budget was equal, and the mean per label of what the model got
    (a conditional model: its one network's iterations, its GFLOP and seconds shared out over the
    labels; n/a for metrics written before training records existed)."""
    t = metrics.get("training") or {}
    per_label = t.get("per_label") or {}
    generator = "n/a" if "generator" not in t else ("EMA " + str(t["ema_decay"]) if t.get("ema_decay") else "trained")
    if not per_label:
        return ["n/a", "n/a", "n/a", "n/a", generator]
    n = len(per_label)
    budget = t.get("budget") or {}
    equal = t.get("equal_budget") or "n/a"
    share = n if t.get("one_network") else 1  # a conditional network's budget: the labels' budgets summed
    if equal == "gflop":
        equal = f"{budget['gflop'] / share:g} GFLOP"
    elif equal == "iterations":
        equal = f"{budget['iterations'] / share:g} iterations"
    return [
        equal,
        f"{t['total']['iterations']} (one network)" if t.get("one_network") else f"{t['total']['iterations'] / n:.0f}",
        f"{t['total']['gflop'] / n:.0f}",
        f"{t['total']['seconds'] / n:.0f}",
        generator,
    ]


def table_rows(metrics_paths) -> tuple[list[str], list[list[str]]]:
    header = ["model", "n generated", *TRAINING_COLUMNS, *(c[0] for c in COLUMNS)]
    rows = []
    for path in metrics_paths:
        m = json.loads(Path(path).read_text())
        n = sum((m.get("protocol", {}).get("n_generated") or {}).values())
        rows.append([models.title(m["model"]), str(n), *training_cells(m), *(_cell(m, *c[1:]) for c in COLUMNS)])
    return header, rows


def _latex_escape(text: str) -> str:
    return (
        text.replace("&", r"\&")
        .replace("%", r"\%")
        .replace("_", r"\_")
        .replace("±", r"$\pm$")
        .replace("×10³", r"$\times 10^3$")
    )


def write_tables(metrics_paths, csv_path, markdown_path, latex_path, *, caption: str = "") -> None:
    header, rows = table_rows(metrics_paths)
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows([header, *rows])
    write_text(csv_path, buf.getvalue())
    md = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + ["| " + " | ".join(r) + " |" for r in rows]
    write_text(markdown_path, (f"{caption}\n\n" if caption else "") + "\n".join(md) + "\n")
    tex = [
        r"\begin{table}[t]",
        r"\centering",
        r"\begin{tabular}{l" + "r" * (len(header) - 1) + "}",
        r"\toprule",
        " & ".join(_latex_escape(h) for h in header) + r" \\",
        r"\midrule",
        *(" & ".join(_latex_escape(c) for c in r) + r" \\" for r in rows),
        r"\bottomrule",
        r"\end{tabular}",
        rf"\caption{{{_latex_escape(caption)}}}" if caption else "",
        r"\end{table}",
    ]
    write_text(latex_path, "\n".join(line for line in tex if line) + "\n")
