"""Where the Inception weights file is, and what `evaluation.inception` makes of its absence: torch-free.

The Snakefile calls `resolve_inception_weights` at parse time; importing torch, torch-fidelity and
torchvision for that one lookup would cost seconds on every `snakemake` invocation, so this module
imports none of them (`labelwise.metrics.inception` re-exports it and builds the network).  The
torch hub cache follows torch's own rule (`torch.hub.get_dir`: `$TORCH_HOME/hub`, `$TORCH_HOME`
defaulting to `$XDG_CACHE_HOME/torch`, that to `~/.cache`); once torch is imported, torch itself is
asked, so `torch.hub.set_dir` and a patched `get_dir` are honoured.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from ..errors import LabelwiseError

MODES = ("auto", "required", "off")
CONFIG_KEY = "evaluation.inception_weights"
HUB_FILENAME = "pt_inception-2015-12-05-6726825d.pth"
# torch-fidelity's `feature_extractor_inceptionv3.URL_INCEPTION_V3`, copied so that the lookup needs
# no torch-fidelity import (tests/test_parse.py checks the copy against the installed torch-fidelity).
URL_INCEPTION_V3 = (
    "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/weights-inception-2015-12-05-6726825d.pth"
)
# The name torch.hub gives the file when torch-fidelity downloads it itself (same weights, same
# hash prefix): accepted too, so a cache filled by an earlier online torch-fidelity run is found.
HUB_FILENAME_TORCH_FIDELITY = URL_INCEPTION_V3.rsplit("/", 1)[-1]
PUBLISHED_SHA256_PREFIX = "6726825d"


def hub_dir() -> Path:
    """torch.hub.get_dir(), without importing torch when it is not imported yet."""
    torch = sys.modules.get("torch")
    if torch is not None and hasattr(torch, "hub"):
        return Path(torch.hub.get_dir())
    return default_hub_dir()


def default_hub_dir() -> Path:
    """torch.hub.get_dir()'s answer when torch.hub.set_dir was never called, from the environment."""
    torch_home = os.getenv("TORCH_HOME", os.path.join(os.getenv("XDG_CACHE_HOME", "~/.cache"), "torch"))
    return Path(os.path.expanduser(torch_home)) / "hub"


def hub_weights_path() -> Path:
    return hub_dir() / "checkpoints" / HUB_FILENAME


def resolve_inception_weights(configured_path: str | os.PathLike | None) -> Path | None:
    """The configured path if one is set (existing or not: the caller reports it), else the torch
    hub cache file if it exists, else None.  Never downloads."""
    if configured_path:
        return Path(configured_path).expanduser()
    hub = hub_weights_path()
    for candidate in (hub, hub.with_name(HUB_FILENAME_TORCH_FIDELITY)):
        if candidate.is_file():
            return candidate
    return None


def fetch_hint(target: Path) -> str:
    return f"on a machine with internet: wget -O {target.name} {URL_INCEPTION_V3}, then copy the file to {target}"


def locate_weights(mode: str, configured_path: str | os.PathLike | None) -> tuple[Path | None, str | None]:
    """Apply `evaluation.inception` to the weights lookup: (path, None) when usable, (None, reason)
    when Inception metrics are to be skipped; raise LabelwiseError for 'required' without weights."""
    if mode not in MODES:
        raise LabelwiseError(f"evaluation.inception must be one of {', '.join(MODES)}, got {mode!r}")
    if mode == "off":
        return None, "evaluation.inception is 'off'"
    path = resolve_inception_weights(configured_path)
    if path is not None and path.is_file():
        return path, None
    if configured_path:
        where = f"{CONFIG_KEY} is {str(configured_path)!r} but no file is there"
        target = Path(configured_path).expanduser()
        put = f"put the weights file at {target} or point {CONFIG_KEY} at it"
    else:
        target = hub_weights_path()
        where = f"{CONFIG_KEY} is not set and the torch hub cache has no {target}"
        put = f"put the weights file at {target} or set {CONFIG_KEY} to its path"
    if mode == "required":
        raise LabelwiseError(
            f"Inception weights not found: {where} (evaluation.inception is 'required', and nothing is downloaded "
            f"at run time). Fix: {put}; {fetch_hint(target)}; or set evaluation.inception: auto to skip "
            "Inception metrics"
        )
    return None, f"Inception weights not found: {where}; to enable Inception metrics {put} ({fetch_hint(target)})"
