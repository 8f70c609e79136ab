"""The compute budget: counted FLOPs per label-iteration, and the iterations a FLOP budget buys.

Models are compared at equal compute (issue 13): a WGAN-GP iteration (5 critic steps, each with the
gradient penalty's double backward) costs several DCGAN iterations (one discriminator step), so an
equal number of iterations is not an equal budget.  Wall-clock minutes are the papers' unit but
depend on the machine and on its load; counted FLOPs do not, so a FLOP budget gives the same
iterations, the same weights and an exact resume everywhere.

`Budget` is a job's budget as configured (budget.*).  `label_iteration_flops` counts one training
iteration of one label — `critic_steps` critic steps (forward on real and generated images, the
gradient penalty with its double backward, backward) and one generator step — by running the
training iteration itself (`labelwise.train.engine.TrainingIteration`) under
`torch.utils.flop_counter.FlopCounterMode` on the model's own networks, batch and resolution.  The
count is of convolutions and matrix products (forward, backward, double backward); elementwise work
(activations, augmentation, Adam, the EMA) is not counted.  The networks run on the `meta` device:
only shapes exist, so counting takes no time and draws no random numbers.

`budget.gflop` (per label) then fixes the iterations at job start: floor(gflop·10⁹ / FLOPs per
iteration), capped by `budget.iterations`; `budget.minutes` still stops a job early.  Which of the
two set the number is said in the train log's first and last lines and in the training record
(`plan_iterations`): a CPU-sized compute budget on GPU-sized networks buys a handful of iterations
(issue 21), and a job that stops there must say why.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
from dataclasses import dataclass

import torch

from ..errors import LabelwiseError


@dataclass
class Budget:
    """A training job's budget per label (budget.*): whichever of its limits comes first ends the job."""

    iterations: int
    minutes: float | None = None
    checkpoint_every: int = 100
    snapshots: tuple[float, ...] = ()  # fractions of `iterations` at which to save the generator
    gflop: float | None = None  # counted GFLOP per label: fixes `iterations` at job start (`resolve`)

    def __post_init__(self):
        self.snapshots = tuple(float(f) for f in (self.snapshots or ()))
        bad = [f for f in self.snapshots if not 0.0 < f <= 1.0]
        if bad:
            raise LabelwiseError(f"budget.snapshots: {bad} are not fractions in (0, 1] of budget.iterations")

    @property
    def log_every(self) -> int:
        # About a hundred rows per run, never more often than every iteration or rarer than 50.
        return max(1, min(50, self.iterations // 100))

    def snapshot_points(self) -> list[tuple[int, float]]:
        """(iteration, fraction) of each snapshot, by iteration: round(fraction × iterations), half up,
        at least 1; fractions that round to the same iteration give one snapshot (the smaller fraction)."""
        points: dict[int, float] = {}
        for f in sorted(self.snapshots):
            points.setdefault(max(1, math.floor(f * self.iterations + 0.5)), f)
        return sorted(points.items())


class _GlobalOnly:
    """Stands in for FlopCounterMode's module tracker, whose autograd hooks torch.autograd.grad (the
    gradient penalty) does not support; every count goes to the 'Global' total, the one used here."""

    parents = {"Global"}

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return None


def count_flops(step) -> int:
    """FLOPs of one call of `step`, counted by torch.utils.flop_counter's formulas (forward, backward
    and double backward of every convolution and matrix product)."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    counter.mod_tracker = _GlobalOnly()
    with counter:
        step()
    return int(counter.get_total_flops())


@functools.lru_cache(maxsize=64)
def _cached_flops(model: str, settings_json: str, channels: int, resolution: int, num_classes: int) -> int:
    from .. import losses, models
    from .engine import TrainingIteration  # here: the engine's modules import torch's heavy parts
    from .networks import job_networks

    settings = json.loads(settings_json)
    meta = torch.device("meta")
    conditional = models.get(model).conditional
    # The training iteration itself, of one member, on the meta device: only shapes exist, so it takes no
    # time and draws nothing from any stream that matters.  The reference form: plain layout, fp32, the
    # grouped kernel, no augmentation (elementwise, not counted), whatever the job's runtime options.
    nets = job_networks(
        model, settings, channels, resolution, 0, [0], meta, num_classes=num_classes if conditional else 1
    )
    bs = int(settings["batch_size"])
    step = TrainingIteration(
        nets,
        torch.optim.Adam(nets.gen.parameters()),
        torch.optim.Adam(nets.critic.parameters()),
        losses.loss_for(models.get(model).loss, settings),
        torch.zeros(bs, channels, resolution, resolution, device=meta),
        [bs],
        [(torch.Generator(), None)],
        batch_size=bs,
        latent_dim=int(settings["latent_dim"]),
        critic_steps=int(settings["critic_steps"]),
        classes=torch.zeros(bs, dtype=torch.long, device=meta) if conditional else None,
    )
    return count_flops(step)


def label_iteration_flops(model: str, settings: dict, channels: int, resolution: int, num_classes: int = 1) -> int:
    """FLOPs of one training iteration of one label (the conditional model: of its one network)."""
    keys = ("width", "latent_dim", "batch_size", "critic_steps")
    return _cached_flops(
        model,
        json.dumps({k: settings[k] for k in keys}, sort_keys=True),
        int(channels),
        int(resolution),
        int(num_classes),
    )


def iterations_bought(gflop: float, flops_per_iteration: int) -> int:
    """The iterations `gflop` counted GFLOP pay for (at least 1)."""
    return max(1, math.floor(float(gflop) * 1e9 / flops_per_iteration))


def resolve(budget, flops_per_iteration: int):
    """`budget` with the iterations its `gflop` buys (at most budget.iterations, at least 1)."""
    if budget.gflop is None:
        return budget
    bought = iterations_bought(budget.gflop, flops_per_iteration)
    return dataclasses.replace(budget, iterations=min(int(budget.iterations), bought))


# Fewer iterations per label than this, set by the compute budget, is a warning at job start: GAN
# networks barely leave their initial weights in so few (issue 21: the CPU demo's budget.gflop left
# the GPU presets' width-64 networks 3-73 iterations).
FEW_ITERATIONS = 100


@dataclasses.dataclass(frozen=True)
class IterationPlan:
    """How a job's iterations were fixed at its start: the budget it trains with, which limit set
    the number, and the words the train log's first and last lines and the training record use."""

    budget: Budget  # the job's budget with budget.gflop turned into iterations (`resolve`)
    cap: int  # budget.iterations as configured
    set_by: str  # "gflop": the compute budget set the iterations; "iterations": the cap did
    text: str  # e.g. "compute budget 3000 GFLOP -> 19 iterations (cap 20000)"
    warning: str | None  # when the compute budget buys fewer than FEW_ITERATIONS per label

    def stop_text(self, stopped_by: str) -> str:
        """What ended the job, for its final log line: `stopped_by` is "gflop" or "iterations" (the
        planned iterations were reached: `set_by`) or "minutes" (budget.minutes ran out first)."""
        if stopped_by == "minutes":
            return f"stopped by the minutes budget, {self.budget.minutes:g} min; planned: {self.text}"
        return f"stopped by the {self.text}"


def plan_iterations(budget, flops_per_iteration: int, labels: int = 1) -> IterationPlan:
    """The iterations `budget` gives a job whose one iteration counts `flops_per_iteration`, and which
    limit set them.  `labels`: labels one iteration trains (the conditional model: all of them; its
    budget is the labels' budgets summed), for the per-label warning threshold."""
    resolved, cap = resolve(budget, flops_per_iteration), int(budget.iterations)
    if budget.gflop is None:
        return IterationPlan(resolved, cap, "iterations", f"iteration cap {cap} (no compute budget)", None)
    gflop, bought = float(budget.gflop), iterations_bought(budget.gflop, flops_per_iteration)
    if bought >= cap:
        text = f"iteration cap {cap} (compute budget {gflop:g} GFLOP would allow {bought})"
        return IterationPlan(resolved, cap, "iterations", text, None)
    warning = None
    if bought < FEW_ITERATIONS * labels:  # the config's keys are per label: so are the numbers named
        warning = (
            f"budget.gflop {gflop / labels:g} buys only {bought / labels:.0f} iterations per label at "
            f"{flops_per_iteration / 1e9:.4g} GFLOP each, fewer than {FEW_ITERATIONS}: these networks will barely "
            f"train. Raise budget.gflop ({cap * flops_per_iteration / 1e9 / labels:.0f} pays for budget.iterations, "
            f"{cap // labels}) or set it to null"
        )
    text = f"compute budget {gflop:g} GFLOP -> {bought} iterations (cap {cap})"
    return IterationPlan(resolved, cap, "gflop", text, warning)
