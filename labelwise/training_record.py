"""The training record: what a training job says about its budget and what it got from it.

Training writes it into every generator file (`training_record`); sampling copies it into the sample
files' attributes; the metrics read it back from there (`record_of_samples`) and summarise it over
the labels into metrics.json's "training" section (`training_summary`), which the paper table and
the comparison figure show.  Torch-free: the metrics and figures read it without training's imports.
"""

from __future__ import annotations

import json


def training_record(
    plan,
    flops_per_iteration: int,
    iterations: int,
    seconds: float,
    stopped_by: str,
    batch_size: int,
    critic_steps: int,
) -> dict:
    """What a generator file says about the budget it was trained with and what it got from it;
    `plan`: the job's `labelwise.train.compute.IterationPlan` (its budget, iterations resolved from
    its gflop, and which limit set them, in words too); `stopped_by`: gflop, iterations or minutes."""
    budget = plan.budget
    return {
        "budget": {
            "iterations": int(budget.iterations),
            "iterations_cap": int(plan.cap),
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


_RECORD_NUMBERS = ("iterations", "seconds", "gflop", "real_images_seen", "flops_per_iteration")


def record_of_samples(attrs: dict, where="a sample file") -> dict:
    """What a sample file (`where`) says about its generator: the EMA decay (None: the trained weights
    were sampled) and its training record (`training_record`; None for files written before the record
    existed).  LabelwiseError when they are not what sampling writes (a samples file may come from
    elsewhere: docs/faults.md)."""
    from .errors import LabelwiseError

    fix = "delete it and rerun sampling"

    def loaded(key):
        value = attrs.get(key)
        try:
            return json.loads(value) if isinstance(value, (str, bytes)) else None
        except (ValueError, RecursionError):
            raise LabelwiseError(f"{where}: its {key!r} attribute is not JSON; {fix}") from None

    ema, record = loaded("ema"), loaded("training")
    good_record = record is None or (
        isinstance(record, dict)
        and isinstance(record.get("budget"), dict)
        and isinstance(record.get("stopped_by"), str)
        and all(
            isinstance(record.get(k), (int, float)) and not isinstance(record.get(k), bool) for k in _RECORD_NUMBERS
        )
    )
    if not good_record or not (ema is None or isinstance(ema, float)):
        raise LabelwiseError(f"{where}: its 'ema' or 'training' attribute is not what sampling writes; {fix}")
    return {"ema": ema, "record": record}


def training_summary(trained: dict[str, dict], *, one_network: bool = False) -> dict:
    """metrics.json's "training": which generator was evaluated, the budget that was equal across the
    models (budget.gflop: equal counted FLOPs; else iterations or minutes), which limit set the
    iterations and in words with both numbers ("compute budget 3000 GFLOP -> 19 iterations (cap
    20000)"; records written before it: None), and what each label got.
    `one_network`: every label's samples come from one conditional network, whose record each of them
    holds: the totals are that network's (its budget is the labels' budgets summed), not their sum."""
    records = {k: v["record"] for k, v in trained.items() if v["record"]}
    emas = sorted({json.dumps(v["ema"]) for v in trained.values()})
    out: dict = {
        "generator": "weight average (EMA)" if emas != ["null"] else "trained weights",
        "ema_decay": json.loads(emas[0]) if len(emas) == 1 else [json.loads(e) for e in emas],
    }
    if not records:
        return {**out, "equal_budget": None, "per_label": {}}
    first = next(iter(records.values()))["budget"]
    equal = "gflop" if first.get("gflop") else "iterations"
    stops = sorted({r["stopped_by"] for r in records.values()})
    if "minutes" in stops:
        equal = "minutes" if stops == ["minutes"] else f"{equal} and minutes (whichever came first)"
    keys = ("iterations", "seconds", "gflop", "real_images_seen")
    if one_network:
        totals = {k: next(iter(records.values()))[k] for k in keys}
    else:
        totals = {k: sum(r[k] for r in records.values()) for k in keys}

    def one_or_all(key):  # the same for every label of a model, unless its labels' shards differ in size
        values = sorted({json.dumps(r.get(key)) for r in records.values()})
        return json.loads(values[0]) if len(values) == 1 else [json.loads(v) for v in values]

    return {
        **out,
        "one_network": one_network,
        "equal_budget": equal,
        "budget": first,
        "iterations_set_by": one_or_all("iterations_set_by"),
        "budget_statement": one_or_all("budget_statement"),
        "flops_per_iteration": next(iter(records.values()))["flops_per_iteration"],
        "total": totals,
        "per_label": {k: {key: r[key] for key in (*keys, "stopped_by")} for k, r in records.items()},
    }
