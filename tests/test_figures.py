"""The comparison figure and the paper table with the four models of the papers' comparison: every
metric present (precision and recall included), and readable — no tick labels running into each
other, no value label on a dot or on another label, nothing drawn outside its panel."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest

from labelwise import models
from labelwise.plots import comparison_figure
from labelwise.tables import table_rows

FOUR = ["wcgan", "dccgan", "cgan", "cdcgan"]


def metrics_of(model: str, rng) -> dict:
    """A metrics.json of ten labels whose per-label values cluster at the pooled value, where a value
    label would sit on the dots if it were placed at the bar's top."""
    labels = [str(k) for k in range(10)]

    def section(pooled, spread):
        per_label = dict(zip(labels, np.clip(pooled + rng.normal(0, spread, 10), 0, None).tolist()))
        return {"pooled": pooled, "per_label": per_label}

    record = {
        "iterations": 300,
        "seconds": 81.0,
        "gflop": 3000.0,
        "real_images_seen": 96000,
        "stopped_by": "iterations",
    }
    return {
        "model": model,
        "protocol": {"n_generated": dict.fromkeys(labels, 100)},
        "training": {
            "generator": "trained weights",
            "ema_decay": None,
            "equal_budget": "gflop",
            "budget": {"iterations": 20000, "gflop": 3000.0, "minutes": None},
            "total": {k: v * 10 for k, v in record.items() if k != "stopped_by"},
            "per_label": dict.fromkeys(labels, record),
        },
        "classifier": {
            "status": "ok",
            "label_accuracy": section(rng.uniform(0.9, 1.0), 0.02),
            "fid": {**section(rng.uniform(5, 80), 3.0), "intra_fid": 50.0},
            "is": {"mean": 9.0, "std": 0.1},
            "precision": section(rng.uniform(0.6, 0.9), 0.03),
            "recall": section(rng.uniform(0.1, 0.9), 0.03),
        },
        "inception": {"status": "skipped", "reason": "no Inception weights; fetch them"},
    }


def boxes_overlap(a, b) -> bool:
    return a.x0 < b.x1 and b.x0 < a.x1 and a.y0 < b.y1 and b.y0 < a.y1


@pytest.mark.parametrize("n_models", [2, 4])
def test_comparison_figure_of_four_models_is_readable(n_models):
    rng = np.random.default_rng(0)
    runs = [metrics_of(m, rng) for m in FOUR[:n_models]]
    fig = comparison_figure(runs, title="mnist5k")
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    axes = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_ylabel().split(",")[0].split("\n")[0] for ax in axes] == [
        "label accuracy",
        "FID in classifier features",
        "precision",
        "recall",
    ]
    for ax in axes:
        ticks = [t.get_window_extent(renderer) for t in ax.get_xticklabels()]
        assert [t.get_text().replace("\n", " ") for t in ax.get_xticklabels()] == [
            models.title(m).split(" (")[0] for m in FOUR[:n_models]
        ]
        assert not any(boxes_overlap(a, b) for a, b in itertools.combinations(ticks, 2)), ax.get_ylabel()
        values = [t for t in ax.texts if t.get_text()]
        assert len(values) == n_models
        dots = np.concatenate([c.get_offsets() for c in ax.collections])
        dots = ax.transData.transform(dots)
        panel = ax.get_window_extent(renderer)
        boxes = [t.get_bbox_patch().get_window_extent(renderer) for t in values]
        for box in boxes:
            inside = (box.x0 <= dots[:, 0]) & (dots[:, 0] <= box.x1) & (box.y0 <= dots[:, 1]) & (dots[:, 1] <= box.y1)
            assert not inside.any(), f"a value label of {ax.get_ylabel()!r} lies on a per-label dot"
            assert panel.y0 <= box.y0 and box.y1 <= panel.y1, f"a value label of {ax.get_ylabel()!r} leaves its panel"
        assert not any(boxes_overlap(a, b) for a, b in itertools.combinations(boxes, 2))
    text = "\n".join(t.get_text() for t in fig.texts)
    assert all(f"{models.title(m).split(' (')[0]}: 300 iterations per label" in text for m in FOUR[:n_models])
    assert "Inception metrics skipped: no Inception weights" in text


def test_paper_table_has_precision_and_recall(tmp_path):
    rng = np.random.default_rng(1)
    paths = []
    for model in FOUR:
        paths.append(tmp_path / f"{model}.json")
        paths[-1].write_text(json.dumps(metrics_of(model, rng)))
    header, rows = table_rows(paths)
    for column in ("classifier precision", "classifier recall", "Inception precision", "Inception recall"):
        assert column in header
    runs = [json.loads(p.read_text()) for p in paths]
    for run, row in zip(runs, rows):
        cells = dict(zip(header, row))
        assert cells["classifier recall"] == f"{run['classifier']['recall']['pooled']:.3f}"
        assert cells["Inception recall"] == "n/a"
    assert [r[0] for r in rows] == [models.title(m) for m in FOUR]
