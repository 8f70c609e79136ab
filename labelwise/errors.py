"""The one exception type that stages raise for bad input: its message names the culprit and the fix.

Entry points (the CLI and the Snakemake scripts) print such an error as a single line and exit 1;
any other exception is a bug and keeps its traceback.
"""


class LabelwiseError(Exception):
    """A user-facing failure: wrong config, missing/corrupt file, diverging run."""
