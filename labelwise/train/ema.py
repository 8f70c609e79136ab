"""An exponential moving average (EMA) of the generator's weights, the generator that is sampled.

`models.<name>.ema: <decay>` keeps, beside the trained generator, the average
``ema_t = β_t · ema_{t-1} + (1 - β_t) · θ_t`` after every generator step t (θ: every floating-point
tensor of the generator's state, batch-norm running statistics included, so that the averaged
network is normalised by averaged statistics; integer counters are copied).  Sampling, snapshots
and evaluation then use the averaged generator (as StyleGAN2-ADA and BigGAN sample from theirs),
which smooths the oscillation of adversarial training.

Warm-up: ``β_t = min(decay, (1 + t) / (10 + t))``.  With a fixed β = 0.999, 300 iterations (this
project's CPU budgets) would leave 0.999³⁰⁰ ≈ 74 % of the average on the random initial weights;
the ramp (the num_updates rule of TensorFlow's ExponentialMovingAverage) lets the early average
follow the network and reaches `decay` after about 10/(1 - decay) steps.  It depends only on the
iteration, so a resumed run computes the same β as one that never stopped.

The average is elementwise, so the packed generator's average (K labels' tensors concatenated) is
each label's average: packed training keeps equal to separate runs, and each label's checkpoint
holds its own part (`unpack_state_dict`).
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import LabelwiseError


def ema_decay(settings: dict) -> float | None:
    """The model's EMA decay, or None when EMA is off."""
    decay = settings.get("ema")
    if decay is None:
        return None
    decay = float(decay)
    if not 0.0 < decay < 1.0:
        raise LabelwiseError(f"models.<name>.ema must be a decay in (0, 1) or null (off), got {decay}")
    return decay


def decay_at(decay: float, iteration: int) -> float:
    """β of the update after generator step `iteration` (1-based): the warm-up ramp, capped at `decay`."""
    return min(decay, (1.0 + iteration) / (10.0 + iteration))


class GeneratorEMA:
    """The running average of one (or one packed) generator's state_dict."""

    def __init__(self, gen: nn.Module, decay: float):
        self.decay = float(decay)
        self.state = {k: v.detach().clone() for k, v in gen.state_dict().items()}

    @torch.no_grad()
    def update(self, gen: nn.Module, iteration: int) -> None:
        beta = decay_at(self.decay, iteration)
        for key, value in gen.state_dict().items():
            avg = self.state[key]
            if avg.is_floating_point():
                avg.mul_(beta).add_(value.detach(), alpha=1.0 - beta)
            else:
                avg.copy_(value)

    def load_state_dict(self, state: dict) -> None:
        missing = set(self.state) ^ set(state)
        if missing:
            raise LabelwiseError(
                f"the checkpoint's generator average has other tensors ({sorted(missing)[:3]}); "
                "delete the checkpoints to retrain"
            )
        for key, value in state.items():
            self.state[key].copy_(value)

    def state_dict(self) -> dict:
        return self.state

    def averaged(self, like: nn.Module) -> nn.Module:
        """`like` (a network of the generator's architecture) holding the averaged weights."""
        like.load_state_dict(self.state)
        return like
