"""The one exception type that stages raise for bad input: its message names the culprit and the fix.

Entry points (the CLI and the Snakemake scripts) print such an error as a single line and exit 1;
any other exception is a bug and keeps its traceback.
"""


class LabelwiseError(Exception):
    """A user-facing failure: wrong config, missing/corrupt file, diverging run."""


def brief_repr(value) -> str:
    """repr(value) for a one-line message; a long one is cut, with its length (a 300-character name)."""
    text = value if isinstance(value, str) else str(value)
    return repr(value) if len(text) <= 80 else f"{text[:40]!r}… ({len(text)} characters)"
