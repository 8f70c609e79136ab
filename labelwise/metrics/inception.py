"""Inception-v3 feature space through torch-fidelity, with weights that are never downloaded here.

Compute nodes are offline, and torch-fidelity fetches its weights from GitHub when given no path,
which would hang; so this module finds the weights file itself (the configured
`evaluation.inception_weights`, else the torch hub cache), checks it, and builds torch-fidelity's
`FeatureExtractorInceptionV3` ('inception-v3-compat', the TF-compatible network behind the
published FID/IS/KID numbers) around it.  `evaluation.inception` decides what a missing file means:
'required' stops with one line saying where to put it and how to fetch it, 'auto' skips the
Inception metrics with that reason recorded, 'off' never looks.  A file that is there but truncated
or of the wrong layout is always an error.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
from pathlib import Path

import numpy as np
import torch

from ..errors import LabelwiseError

# The weights lookup is torch-free (the Snakefile uses it at parse time); re-exported from here.
from .inception_weights import (
    CONFIG_KEY,
    HUB_FILENAME,
    HUB_FILENAME_TORCH_FIDELITY,
    MODES,
    PUBLISHED_SHA256_PREFIX,
    URL_INCEPTION_V3,
    fetch_hint,
    hub_dir,
    hub_weights_path,
    locate_weights,
    resolve_inception_weights,
)

try:
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3
except ImportError as exc:  # pragma: no cover - depends on the install
    raise LabelwiseError(
        f"Inception metrics need torch-fidelity, which cannot be imported ({exc}); "
        "install it with pip install 'labelwise[metrics]', or set evaluation.inception: off"
    ) from None

log = logging.getLogger("labelwise.metrics")

EXTRACTOR_NAME = "inception-v3-compat"
POOL_FEATURE = "2048"  # torch-fidelity's layer for FID and KID
LOGITS_FEATURE = "logits_unbiased"  # torch-fidelity's layer for IS


class _TorchFidelityInceptionV3(FeatureExtractorInceptionV3):
    """torch-fidelity's InceptionV3, constructed without letting its constructor load weights.

    FeatureExtractorInceptionV3.__init__ always either downloads (path None) or runs
    `torch.load(path, weights_only=False)` and `self.load_state_dict(...)`.  Neither is acceptable
    here: a download hangs offline, and weights_only=False would execute code from a data file.
    So the constructor is given an in-memory empty dict (the only thing it unpickles is ours), its
    call to load_state_dict is ignored while it runs, and the caller loads the state dict that
    `load_weights` already read with weights_only=True and checked.  The network itself — layers,
    TF-compatible resize and normalisation, forward — stays torch-fidelity's.

    Rejected alternatives: passing the checked file's path lets torch-fidelity unpickle it again
    with weights_only=False (a second read, of a file that could have changed since); re-saving
    the checked dict to a BytesIO for it works but copies ~95 MB to unpickle it once more.  Should
    a future torch-fidelity stop calling self.load_state_dict, its strict load of the empty dict
    fails loudly instead of leaving random weights.
    """

    def __init__(self, features_list, internal_dtype=None):
        self._constructing = True  # plain attribute: nn.Module.__setattr__ stores it before Module init
        empty = io.BytesIO()
        torch.save({}, empty)
        empty.seek(0)
        super().__init__(
            EXTRACTOR_NAME,
            list(features_list),
            feature_extractor_weights_path=empty,
            feature_extractor_internal_dtype=internal_dtype,
        )
        self._constructing = False

    def load_state_dict(self, state_dict, strict=True, assign=False):
        if self._constructing:
            return None
        return super().load_state_dict(state_dict, strict=strict, assign=assign)


def build_inception(
    state_dict: dict | None = None, features=(POOL_FEATURE, LOGITS_FEATURE), internal_dtype: str | None = None
) -> FeatureExtractorInceptionV3:
    """torch-fidelity's InceptionV3 holding `state_dict` (strictly loaded), or its random
    initialisation when `state_dict` is None (used by tests, which cannot have the real weights)."""
    net = _TorchFidelityInceptionV3(features, internal_dtype)
    if state_dict is not None:
        net.load_state_dict(state_dict, strict=True)
    return net.requires_grad_(False).eval()


def expected_layout() -> dict[str, tuple[int, ...]]:
    """Parameter/buffer names and shapes the extractor needs, read off the network itself (built on
    the meta device: no memory, no init)."""
    with torch.device("meta"):
        net = _TorchFidelityInceptionV3([POOL_FEATURE])
    return {k: tuple(v.shape) for k, v in net.state_dict().items()}


def _optional(key: str) -> bool:
    # BatchNorm counters: files saved by older PyTorch lack them and load_state_dict fills them in.
    return key.endswith("num_batches_tracked")


def file_sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def load_weights(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read an Inception weights file safely (weights_only=True) and check it has the layout
    torch-fidelity's network expects and finite values; LabelwiseError naming the file otherwise."""
    path = Path(path)
    fix = (
        f"delete it and fetch it again ({fetch_hint(path)}), or point {CONFIG_KEY} at a good copy; "
        "evaluation.inception: off skips Inception metrics"
    )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # any failure to read means the same thing to the user: a bad file
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise LabelwiseError(
            f"{path}: not a readable PyTorch weights file ({type(exc).__name__}: {first[:200]}); "
            f"it may be truncated or not the Inception weights: {fix}"
        ) from None
    if not isinstance(state, dict) or not all(isinstance(k, str) and torch.is_tensor(v) for k, v in state.items()):
        raise LabelwiseError(f"{path}: holds {type(state).__name__}, not a state dict of tensors: {fix}")
    want = expected_layout()
    missing = [k for k in want if k not in state and not _optional(k)]
    unexpected = [k for k in state if k not in want]
    wrong = [
        f"{k} {tuple(state[k].shape)} (expected {want[k]})"
        for k in want
        if k in state and tuple(state[k].shape) != want[k]
    ]
    if missing or unexpected or wrong:
        parts = []
        for what, items in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong)):
            if items:
                parts.append(f"{len(items)} {what}: {', '.join(items[:3])}{', ...' if len(items) > 3 else ''}")
        raise LabelwiseError(
            f"{path}: not torch-fidelity's InceptionV3 ({EXTRACTOR_NAME}) weights ({'; '.join(parts)}): {fix}"
        )
    bad = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise LabelwiseError(f"{path}: non-finite values in {', '.join(bad[:3])}: the file is damaged: {fix}")
    return state


class InceptionSpace:
    """The Inception feature space: uint8 images of any size and 1 or 3 channels -> features.

    `features(images)` returns {'pool': (N, 2048) float32, 'logits': (N, 1008) float32}: the pool
    features are torch-fidelity's for FID/KID, the logits its unbiased logits for IS.  Grayscale is
    replicated to RGB and the network resizes to 299×299 itself (TF-compatible bilinear), so MNIST's
    28 px, padded 32 px samples and 64 px images all go in as they are.
    """

    name = "inception"

    def __init__(self, weights_path: str | os.PathLike, device: str | torch.device = "cpu", batch_size: int = 50):
        self.weights_path = Path(weights_path)
        self.device = torch.device(device)
        self.batch_size = int(batch_size)
        state = load_weights(self.weights_path)
        self.sha256 = file_sha256(self.weights_path)
        if not self.sha256.startswith(PUBLISHED_SHA256_PREFIX):
            log.warning(
                "%s: sha256 %s... is not that of the published Inception weights (%s...); "
                "scores will not be comparable with published ones",
                self.weights_path,
                self.sha256[:8],
                PUBLISHED_SHA256_PREFIX,
            )
        self.net = build_inception(state).to(self.device)
        # What makes two feature sets comparable: recorded in stats caches and checked on reuse.
        self.identity = {"extractor": EXTRACTOR_NAME, "features": POOL_FEATURE, "weights_sha256": self.sha256}

    @classmethod
    def from_settings(cls, mode: str, configured_path, device="cpu", batch_size: int = 50):
        """(InceptionSpace, None), or (None, reason) when `mode` and the weights lookup say skip."""
        path, reason = locate_weights(mode, configured_path)
        if path is None:
            return None, reason
        return cls(path, device=device, batch_size=batch_size), None

    @torch.no_grad()
    def features(self, images: np.ndarray) -> dict[str, np.ndarray]:
        images = np.asarray(images)
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1] not in (1, 3):
            raise ValueError(f"expected uint8 N×C×H×W images with C 1 or 3, got {images.dtype} {images.shape}")
        pool, logits = [], []
        for start in range(0, len(images), self.batch_size):
            x = torch.from_numpy(np.ascontiguousarray(images[start : start + self.batch_size])).to(self.device)
            if x.shape[1] == 1:
                x = x.expand(-1, 3, -1, -1)
            p, lg = self.net(x.contiguous())
            pool.append(p.float().cpu())
            logits.append(lg.float().cpu())
        if not pool:
            return {"pool": np.zeros((0, 2048), np.float32), "logits": np.zeros((0, 1008), np.float32)}
        return {"pool": torch.cat(pool).numpy(), "logits": torch.cat(logits).numpy()}
