"""The model registry: every model the pipeline can train, and what its name means.

One entry per model: its title and colour in figures and tables, its place in the papers' order,
whether it is one class-conditional network over all labels or one network per label, its loss and
network choices, and the schema section that holds its settings and their defaults.  The schema check,
the rules, the command line, the training loops and the figures read this table; adding a model is
one `register` call here (or in a plugin module, below) plus its networks or loss if they are new.

Torch-free: the Snakefile imports it at parse time.  Losses and networks are named here
(`labelwise.losses`, `labelwise.nets`), built by the training loops.

Plugins: LABELWISE_MODEL_PLUGINS names importable modules (comma-separated) that call `register` when
imported (tests/test_models.py adds a toy model this way).  Importing a module runs its code, with
the user's rights, in every process that reads the registry: the Snakefile's parse (`snakemake -n`
too), every `labelwise` command and every job.  So the variable is code execution, as a Snakefile
is (README, "Model plugins").  `load_plugins` imports them once per process, on the first look at
the registry; the entry points call it inside their one-line error guard, so a missing or broken
plugin is one line naming it, and it logs each module it imported and from which file.
"""

from __future__ import annotations

import importlib
import logging
import os
from dataclasses import dataclass

from .errors import LabelwiseError

PLUGINS_ENV = "LABELWISE_MODEL_PLUGINS"
log = logging.getLogger("labelwise.models")


@dataclass(frozen=True)
class Model:
    name: str
    title: str  # figures and tables; the part before " (" is the short name in legends
    color: str  # matplotlib colour, the same in every figure whatever subset of models a run has
    loss: str  # labelwise.losses: "wgan-gp" or "bce"
    critic_norm: str = "none"  # labelwise.nets.Critic norm of the critic (the conditional one's trunk too)
    init: str = "pytorch"  # "dcgan": labelwise.nets.dcgan_init_ on both networks
    # One class-conditional network over all selected labels (files named ALL), trained with the sum of
    # the per-label budgets; False: one network per label.
    conditional: bool = False
    # The schema section (models.<settings>) whose settings and defaults this model takes; None: its own.
    settings: str | None = None

    @property
    def schema_section(self) -> str:
        return self.settings or self.name


# A conditional model's one generator, log and snapshot bundle are named this instead of a label.
ALL = "all"
REGISTRY: dict[str, Model] = {}


def register(model: Model) -> Model:
    """Add `model` to the registry, after the models registered before it (the papers' order)."""
    if model.name in REGISTRY and REGISTRY[model.name] != model:
        raise LabelwiseError(f"model {model.name!r} is registered twice with different entries; rename one")
    REGISTRY[model.name] = model
    return model


def registry() -> dict[str, Model]:
    """Every registered model by name, the plugins' included (`load_plugins`)."""
    load_plugins()
    return REGISTRY


def get(name: str) -> Model:
    try:
        return registry()[name]
    except (KeyError, TypeError):
        raise LabelwiseError(f"unknown model {name!r}; known models: {', '.join(REGISTRY)}") from None


def names() -> list[str]:
    return list(registry())


def per_label() -> list[str]:
    return [m.name for m in registry().values() if not m.conditional]


def ordered(models) -> list[str]:
    """`models` in the registry's order (the papers'), unknown names last in their given order."""
    order = names()
    return sorted(models, key=lambda m: (order + [m]).index(m))


def file_names(model: str, labels) -> list:
    """The names of a model's per-label files (generators, logs, snapshots): its labels, or ALL."""
    return [ALL] if get(model).conditional else list(labels)


def title(model: str) -> str:
    return registry()[model].title if model in registry() else model


def plugin_modules() -> list[str]:
    """The module names LABELWISE_MODEL_PLUGINS lists (comma-separated), in order."""
    return [p.strip() for p in os.environ.get(PLUGINS_ENV, "").split(",") if p.strip()]


_plugins_loaded = False


def load_plugins() -> None:
    """Import every module of LABELWISE_MODEL_PLUGINS, once per process: a module that cannot be
    imported, or fails while it runs, is one LabelwiseError naming it."""
    global _plugins_loaded
    if _plugins_loaded:
        return
    _plugins_loaded = True  # first: a plugin that looks at the registry while it is imported must not recurse
    for name in plugin_modules():
        try:
            module = importlib.import_module(name)
        except Exception as exc:  # the plugin's own code ran: whatever it raised, one line naming it
            raise LabelwiseError(
                f"{PLUGINS_ENV}: cannot import model plugin {name!r} ({type(exc).__name__}: "
                f"{' '.join(str(exc).split())}); fix it, put it on PYTHONPATH or remove it from the variable"
            ) from None
        log.info("%s: imported model plugin %s from %s", PLUGINS_ENV, name, getattr(module, "__file__", "?"))


register(Model("wcgan", "W-CGAN (per-label WGAN-GP)", "C0", loss="wgan-gp", critic_norm="none", init="pytorch"))
register(Model("dccgan", "DC-CGAN (per-label DCGAN)", "C1", loss="bce", critic_norm="batch", init="dcgan"))
# One class-conditional network over all selected labels: the serial approach the papers compare with,
# a WGAN-GP (W-CGAN's counterpart) and a DCGAN (DC-CGAN's, the DC-CGAN paper's baseline, conditioned by
# conditional batch norm and a projection discriminator rather than its code's labels on the batch axis).
register(Model("cgan", "single CGAN", "C2", loss="wgan-gp", critic_norm="none", init="pytorch", conditional=True))
register(Model("cdcgan", "single cDCGAN", "C3", loss="bce", critic_norm="batch", init="dcgan", conditional=True))
