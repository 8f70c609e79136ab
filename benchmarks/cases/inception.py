"""Case e: Inception features through labelwise.metrics.inception vs torch-fidelity used directly.

Candidate: `InceptionSpace.features` (uint8 in; batching, grey->RGB, float32 pool features and
unbiased logits out).  Reference: torch-fidelity's `FeatureExtractorInceptionV3`
('inception-v3-compat', features '2048' and 'logits_unbiased') called batch by batch on the same
uint8 tensors.  Both use the same weights file, batch size and thread count (1).  The published
weights cannot be downloaded here, so the file holds the network's random initialisation: speed
does not depend on the weight values.  Images: real mnist5k digits (28x28, grey), resized to
299x299 inside the network, as in the pipeline.
"""

from __future__ import annotations

import logging

import numpy as np
import torch
from harness import compare, timed

NAME = "inception"
DESCRIPTION = "Inception-v3 features: labelwise.metrics InceptionSpace vs torch-fidelity directly"


def run(ctx) -> list:
    try:
        from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

        from labelwise.metrics.inception import (
            EXTRACTOR_NAME,
            LOGITS_FEATURE,
            POOL_FEATURE,
            InceptionSpace,
            build_inception,
        )
    except Exception as exc:  # the case is optional: report why it was skipped
        ctx.log(f"  [inception] skipped: {exc}")
        return []
    from labelwise.images import read_images

    torch.set_num_threads(1)  # like a pipeline job (runtime.threads: 1); see docs on threads
    weights = ctx.tmp / "inception-random.pth"
    torch.manual_seed(0)
    torch.save(build_inception(None).state_dict(), weights)
    logging.getLogger("labelwise.metrics").setLevel(logging.ERROR)  # the expected "not the published weights"
    space = InceptionSpace(weights, device="cpu", batch_size=50)
    direct = FeatureExtractorInceptionV3(
        EXTRACTOR_NAME, [POOL_FEATURE, LOGITS_FEATURE], feature_extractor_weights_path=str(weights)
    ).eval()
    n = 4 if ctx.quick else 20
    images = np.ascontiguousarray(read_images(ctx.shard(0))[0][:n])

    @torch.no_grad()
    def reference():
        out = []
        for start in range(0, n, 50):
            x = torch.from_numpy(images[start : start + 50]).expand(-1, 3, -1, -1).contiguous()
            out.append(direct(x))
        return out

    rows = compare(
        "e.inception",
        ("torch-fidelity FeatureExtractorInceptionV3", timed(reference)),
        {"labelwise InceptionSpace.features": timed(lambda: space.features(images))},
        repeats=ctx.repeats(3, quick=1),
        warmup=0 if ctx.quick else 1,
        log=ctx.log,
    )
    rows[0].note = f"{n} mnist5k images, batch 50, 1 thread, random weights"
    rows[0].extra = {"images": n, "images_per_s": n / rows[0].candidate_median_s}
    return rows
