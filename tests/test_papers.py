"""The reproduction report's arithmetic (benchmarks/papers.py, `make papers`, docs/papers.md): the
verdict rule over seeds, and FID at equal wall time on N devices from the curves against compute."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

SPEC = importlib.util.spec_from_file_location(
    "papers", Path(__file__).resolve().parents[1] / "benchmarks" / "papers.py"
)
papers = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(papers)


@pytest.mark.parametrize(
    "better, worse, what, expected",
    [
        ([0.6, 0.62, 0.61], [0.4, 0.42, 0.41], "recall", "holds"),  # higher is better, far apart
        ([0.4, 0.42, 0.41], [0.6, 0.62, 0.61], "recall", "does not hold at this scale"),
        ([0.5, 0.7, 0.6], [0.55, 0.65, 0.5], "recall", "not established"),  # within the seeds' spread
        ([10.0, 11.0, 12.0], [30.0, 31.0, 29.0], "fid", "holds"),  # lower is better
        ([30.0, 31.0, 29.0], [10.0, 11.0, 12.0], "stability", "does not hold at this scale"),
        ([10.0], [30.0], "fid", "not established"),  # one seed: no spread to weigh the difference
    ],
)
def test_verdict_compares_means_with_two_standard_errors(better, worse, what, expected):
    assert papers.verdict(better, worse, what)[0] == expected


def run(model: str, gflop_per_label: list[float], fids: list[float], rate: float) -> dict:
    """One scored run as load_results gives it: its metrics.json's training, its curve, its CPU records."""
    n = 10 if model in ("cgan", "cdcgan") else 1
    per_it = 1e9  # 1 GFLOP per iteration
    points = [{"iteration": round(g * n), "classifier": {"fid": {"pooled": f}}} for g, f in zip(gflop_per_label, fids)]
    total = gflop_per_label[-1] * 10  # ten labels' compute, in ten jobs or one
    return {
        "metrics": {"model": model, "training": {"flops_per_iteration": per_it}},
        "curve": {"points": points},
        "cpu": [{"gflop_trained": total, "cpu_seconds": total / rate}],
    }


def test_wall_time_on_n_devices_and_where_per_label_overtakes():
    """Per-label W-CGAN (10 labels) ends at FID 20 after 100 GFLOP per label; the single network at
    the same rate passes FID 30 at a tenth of its compute and ends at 10: on one device (equal compute)
    it wins, on 10 devices the per-label jobs finish when the single network is at its first point."""
    fractions = [0.1, 0.5, 1.0]
    results = {
        "toy": {
            "wcgan": [run("wcgan", [100 * f for f in fractions], [60.0, 30.0, 20.0], rate=10.0)],
            "cgan": [run("cgan", [100 * f for f in fractions], [30.0, 15.0, 10.0], rate=10.0)],
        }
    }
    one = papers.wall_time_curves(results, "toy", 1)
    assert one["wcgan"][0] == pytest.approx([10 * 10 * f for f in fractions])  # ten labels in turn on one device
    assert one["cgan"][0] == pytest.approx([100 * 10 * f / 10 for f in fractions])
    ten = papers.wall_time_curves(results, "toy", 10)
    assert ten["wcgan"][0] == pytest.approx([10 * f for f in fractions]) and ten["cgan"] == one["cgan"]
    assert papers.wall_time_curves(results, "toy", 4)["wcgan"][0][-1] == pytest.approx(
        30.0
    )  # ceil(10/4) = 3 per device
    assert papers.fid_at(one["cgan"], 5.0) == 30.0  # before the first point: the first point's
    assert papers.fid_at(one["cgan"], 30.0) == pytest.approx(30 + (15 - 30) * (30 - 10) / (50 - 10))
    o = papers.overtaking(results, "toy")["wcgan"]
    assert o["rows"][1]["per_label"] == 20.0 and o["rows"][1]["single"] == 10.0  # equal compute: single wins
    assert o["rows"][10] == {"seconds": pytest.approx(10.0), "per_label": 20.0, "single": 30.0}
    assert o["overtakes_at"] == 4  # 3 labels per device: 30 s, when the single network is at FID 22.5 > 20
