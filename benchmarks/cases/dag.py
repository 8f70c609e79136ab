"""Case d: Snakemake DAG build + dry run of the pipeline for 10, 100 and 1000 labels.

`snakemake -n -s Snakefile --directory <tmp> --configfile <cfg>` as a subprocess, wall time
(start-up included, as a user sees it).  10 labels: the default mnist5k data; 100 and 1000
labels: data.source imagefolder over a folder of that many empty class folders (the Snakefile
lists them at parse time).  Reference: a trivial Snakefile (one `touch` rule, expanded) with the
same number of jobs, dry-run the same way — what Snakemake itself costs for a DAG of that size;
the ratio is the pipeline's own parse/config/DAG cost on top of it.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

from harness import compare

NAME = "dag"
DESCRIPTION = "snakemake -n of the pipeline for 10/100/1000 labels vs a trivial Snakefile with as many jobs"

TRIVIAL = """rule all:
    input: expand("out/{{i}}.txt", i=range({n}))

rule make:
    output: "out/{{i}}.txt"
    shell: "touch {{output}}"
"""


def _snakemake() -> list[str]:
    exe = Path(sys.executable).with_name("snakemake")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "snakemake"]


def _dry_run(snakefile, directory, configfile=None) -> tuple[float, int]:
    cmd = [*_snakemake(), "-n", "-s", str(snakefile), "--directory", str(directory)]
    if configfile:
        cmd += ["--configfile", str(configfile)]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{(proc.stderr or proc.stdout)[-2000:]}")
    m = re.search(r"^total\s+(\d+)\s*$", proc.stdout + proc.stderr, re.M)
    return seconds, int(m.group(1)) if m else -1


def run(ctx) -> list:
    rows = []
    for n_labels in (10,) if ctx.quick else (10, 100, 1000):
        work = ctx.tmp / f"dag-{n_labels}"
        work.mkdir(parents=True, exist_ok=True)
        cfg = work / "config.yaml"
        if n_labels == 10:
            cfg.write_text("data:\n  source: mnist5k\n")
        else:
            root = work / "classes"
            for i in range(n_labels):
                (root / f"class{i:04d}").mkdir(parents=True, exist_ok=True)
            cfg.write_text(f"data:\n  source: imagefolder\n  root: {root}\n")
        _, jobs = _dry_run(ctx.repo / "Snakefile", work / "run", cfg)  # also warms the file cache
        trivial = work / "Trivial.smk"
        trivial.write_text(TRIVIAL.format(n=max(jobs - 1, 1)))
        new = compare(
            f"d.dryrun/{n_labels} labels",
            ("trivial Snakefile, same job count", lambda: _dry_run(trivial, work / "trivial")[0]),
            {"pipeline snakemake -n": lambda: _dry_run(ctx.repo / "Snakefile", work / "run", cfg)[0]},
            repeats=ctx.repeats(3, quick=1),
            log=ctx.log,
        )
        new[0].extra = {"labels": n_labels, "jobs": jobs, "jobs_per_s": jobs / new[0].candidate_median_s}
        new[0].note = f"{jobs} jobs, {jobs / new[0].candidate_median_s:.0f} jobs/s"
        rows += new
    return rows
