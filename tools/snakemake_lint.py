"""`snakemake --lint` for CI: fails on every finding not listed as deliberate in docs/lint.md.

Usage: python tools/snakemake_lint.py [snakemake options...]  (run from the repository root; extra
options, e.g. --config runtime='{labels_per_job: 4}', are passed to snakemake).  Exit status 0 when
every finding is listed, 1 otherwise (the unlisted ones are printed), 2 when snakemake itself fails.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LIST = ROOT / "docs" / "lint.md"


def deliberate(text: str) -> list[tuple[re.Pattern, re.Pattern]]:
    """(where, finding) patterns of the table rows in docs/lint.md."""
    rows = []
    for line in text.splitlines():
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]
        if len(cells) == 3 and cells[0].startswith("`") and cells[1].startswith("`"):
            where, finding = (c.strip("`").replace("\\|", "|") for c in cells[:2])
            rows.append((re.compile(where), re.compile(finding)))
    return rows


def findings(output: str) -> list[tuple[str, str]]:
    """(where, title) of every finding in `snakemake --lint`'s text report."""
    found, where = [], None
    for line in output.splitlines():
        head = re.match(r"Lints for (?:snakefile (.+)|rule (\S+) \(.*\)):$", line)
        if head:
            where = head.group(1) or head.group(2)
        elif where and (item := re.match(r"    \* (.+?)(?: in line \d+\.?)?:$", line)):
            found.append((where, item.group(1)))
    return found


def unlisted(found, rows) -> list[tuple[str, str]]:
    return [(w, t) for w, t in found if not any(pw.fullmatch(w) and pf.match(t) for pw, pf in rows)]


def main(argv: list[str]) -> int:
    result = subprocess.run(
        [sys.executable, "-m", "snakemake", "--lint", *argv], cwd=ROOT, capture_output=True, text=True
    )
    output = result.stdout + result.stderr
    found = findings(output)
    if result.returncode not in (0, 1) or (result.returncode == 1 and not found):
        print(output[-3000:], file=sys.stderr)
        print("snakemake --lint failed before linting (above)", file=sys.stderr)
        return 2
    bad = unlisted(found, deliberate(LIST.read_text()))
    for where, title in bad:
        print(f"{where}: {title}")
    if bad:
        print(
            f"{len(bad)} snakemake --lint finding(s) not listed in {LIST.relative_to(ROOT)}: fix them, or list "
            "and explain a deliberate one there",
            file=sys.stderr,
        )
        return 1
    print(f"snakemake --lint: {len(found)} finding(s), all deliberate ({LIST.relative_to(ROOT)})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
