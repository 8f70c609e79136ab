"""Snakemake entry point of rule scaling_summary: every k-group's job records -> summary.csv + jobs.csv."""
import logging

from labelwise.cli import snakemake_entry
from labelwise.scaling import concurrency_problem, write_summary


def summary(smk):
    rows = write_summary(smk.input.records, smk.output.summary, smk.output.jobs)
    log = logging.getLogger("labelwise.scaling")
    for row in rows:
        log.info("k=%d: makespan %.2f s, mean job %.2f s, efficiency %.3f, %d of %d jobs at once",
                 row["k"], row["makespan_s"], row["mean_job_s"], row["efficiency"], row["max_concurrent"], row["n_jobs"])
        problem = concurrency_problem(row)
        if problem:
            log.warning("k=%d is not a concurrent measurement: %s", row["k"], problem)


snakemake_entry(snakemake, summary)  # noqa: F821 (injected by Snakemake)
