"""The compute budget: counted FLOPs per label-iteration, and the iterations a FLOP budget buys.

Models are compared at equal compute (issue 13): a WGAN-GP iteration (5 critic steps, each with the
gradient penalty's double backward) costs several DCGAN iterations (one discriminator step), so an
equal number of iterations is not an equal budget.  Wall-clock minutes are the papers' unit but
depend on the machine and on its load; counted FLOPs do not, so a FLOP budget gives the same
iterations, the same weights and an exact resume everywhere.

`label_iteration_flops` counts one training iteration of one label — `critic_steps` critic steps
(forward on real and generated images, the gradient penalty with its double backward, backward)
and one generator step — with `torch.utils.flop_counter.FlopCounterMode` on the model's own
networks, batch and resolution.  The count is of convolutions and matrix products (forward,
backward, double backward); elementwise work (activations, augmentation, Adam, the EMA) is not
counted.  The networks run on the `meta` device: only shapes exist, so counting takes no time and
draws no random numbers.

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

import torch

from .. import losses


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
    from .. import models
    from .loop import build_networks  # here: loop imports this module

    settings = json.loads(settings_json)
    meta = torch.device("meta")
    gen, critic = build_networks(model, settings, channels, resolution, 0, 0, meta, num_classes=num_classes)
    bs, latent = int(settings["batch_size"]), int(settings["latent_dim"])
    conditional = models.get(model).conditional
    y = torch.zeros(bs, dtype=torch.long, device=meta) if conditional else None
    G = (lambda z: gen(z, y)) if conditional else gen
    D = (lambda x: critic(x, y)) if conditional else critic
    wgan = models.get(model).loss == "wgan-gp"

    def step():
        real = torch.zeros(bs, channels, resolution, resolution, device=meta)
        critic.requires_grad_(True)
        for _ in range(int(settings["critic_steps"])):
            with torch.no_grad():
                fake = G(torch.zeros(bs, latent, device=meta))
            if wgan:
                alpha = torch.zeros(bs, 1, 1, 1, device=meta)
                d_loss, _ = losses.wgan_gp_critic_loss(D, real, fake, 10.0, None, alpha=alpha)
            else:
                d_loss, _ = losses.bce_discriminator_loss(D, real, fake)
            d_loss.backward()
        critic.requires_grad_(False)
        fake = G(torch.zeros(bs, latent, device=meta))
        (losses.wgan_generator_loss(D, fake) if wgan else losses.bce_generator_loss(D, fake)).backward()

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

    budget: object  # the job's Budget with budget.gflop turned into iterations (`resolve`)
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


def training_record(
    plan: IterationPlan,
    flops_per_iteration: int,
    iterations: int,
    seconds: float,
    stopped_by: str,
    batch_size: int,
    critic_steps: int,
) -> dict:
    """What a generator file says about the budget it was trained with (`plan`: which limit set its
    iterations, in words too) and what it got from it (`stopped_by`: gflop, iterations or minutes)."""
    budget = plan.budget
    return {
        "budget": {
            "iterations": int(budget.iterations),
            "iterations_cap": plan.cap,
            "gflop": budget.gflop,
            "minutes": budget.minutes,
        },
        "iterations_set_by": plan.set_by,
        "budget_statement": plan.text,
        "stopped_by": stopped_by,
        "iterations": int(iterations),
        "seconds": float(seconds),
        "flops_per_iteration": int(flops_per_iteration),
        "gflop": iterations * flops_per_iteration / 1e9,
        "real_images_seen": int(iterations) * int(batch_size) * int(critic_steps),
    }
