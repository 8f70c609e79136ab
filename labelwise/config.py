"""Configuration: the JSON schema (labelwise/schemas/config.schema.yaml), default filling, clear errors.

The Snakefile validates with `snakemake.utils.validate` (which fills the schema's defaults) and,
when that fails, reports `explain_error`'s one line; the `labelwise` command line uses
`load_config`, the same schema and defaults without Snakemake.  A message names the key and
what is allowed, e.g. "config key budget.iterations: -5 is less than the minimum of 1".

Config files compose one way everywhere (README "Configuration"): the schema's defaults, then each
given file in order (`merge_config`), then Snakemake's `--config`; config.yaml is the file only
when none is given (the Snakefile), so a preset is a whole configuration, never laid over the demo.
"""

from __future__ import annotations

import copy
import json
import math
import re
from pathlib import Path

import jsonschema
import yaml

from . import models
from .errors import LabelwiseError, brief_repr
from .io import write_text

SCHEMA_PATH = Path(__file__).parent / "schemas" / "config.schema.yaml"


class StrictLoader(yaml.SafeLoader):
    """YAML as a config file means it: a key given twice in one mapping is an error (PyYAML keeps the
    last one silently), and `1e-4` is a number.  PyYAML follows YAML 1.1, whose floats need a dot
    (`1.0e-4`), so it reads `1e-4` as a string; YAML 1.2 (and every ML paper's code) reads it as a float."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen = {}
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=True)
                try:
                    first = seen.setdefault(key, key_node)
                except TypeError:  # an unhashable key: PyYAML reports it itself
                    continue
                if first is not key_node:
                    raise yaml.constructor.ConstructorError(
                        None,
                        None,
                        f"key {key!r} appears twice in one mapping (lines {first.start_mark.line + 1} "
                        f"and {key_node.start_mark.line + 1}); keep one of them",
                        key_node.start_mark,
                    )
        return super().construct_mapping(node, deep=deep)


# YAML 1.2's float forms without a dot (1e-4, 5E+3); checked after YAML 1.1's int and float forms.
StrictLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?[0-9][0-9_]*[eE][-+]?[0-9]+$"), list("-+0123456789")
)


# Aliases are allowed (`cgan: *wcgan_settings`) while the document they expand to stays small: a
# full config is about 150 values (keys, scalars, lists, mappings), so 10,000 leaves room for long
# label lists and refuses a "billion laughs" document (a few hundred bytes expanding to 10^9 values)
# before anything is built from it.  A recursive alias (a list that contains itself) is refused too.
MAX_CONFIG_VALUES = 10_000
# And a config file is text a person writes: at most 1 MiB is read (config.yaml is 2 KiB).
MAX_CONFIG_BYTES = 1 << 20


class ConfigTooLarge(yaml.YAMLError):
    """A config document that expands to more than MAX_CONFIG_VALUES values, or into itself."""


def _too_large(what: str) -> str:
    return (
        f"{what} expands, aliases and all, to more than {MAX_CONFIG_VALUES:,} values (a full config has "
        "about 150); write the values out instead of nesting aliases (labelwise.config.MAX_CONFIG_VALUES)"
    )


def _node_values(node, memo: dict, open_nodes: set) -> int:
    """How many values `node` expands to (an alias counts its anchor's values every time it appears),
    counted once per node: a shared node's count is remembered, not recounted."""
    key = id(node)
    if key in memo:
        return memo[key]
    if key in open_nodes:
        raise ConfigTooLarge("an alias refers to a value that contains it (a recursive alias)")
    open_nodes.add(key)
    if isinstance(node, yaml.MappingNode):
        children = [child for pair in node.value for child in pair]
    elif isinstance(node, yaml.SequenceNode):
        children = list(node.value)
    else:
        children = []
    total = 1
    for child in children:
        total += _node_values(child, memo, open_nodes)
        if total > MAX_CONFIG_VALUES:
            raise ConfigTooLarge(_too_large("the document"))
    open_nodes.discard(key)
    memo[key] = total
    return total


def read_yaml(text: str):
    """`text` read with `StrictLoader` (safe: builds plain data only), refused (ConfigTooLarge) when
    it expands to more than MAX_CONFIG_VALUES values or nests deeper than Python can read."""
    loader = StrictLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _node_values(node, {}, set())
        return loader.construct_document(node)
    except RecursionError:
        raise ConfigTooLarge("it nests lists or mappings too deeply to be a config") from None
    finally:
        loader.dispose()


def read_config_text(path) -> str:
    """The text of config file `path`, refused (ConfigTooLarge) beyond MAX_CONFIG_BYTES."""
    with open(path, "rb") as f:
        data = f.read(MAX_CONFIG_BYTES + 1)
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigTooLarge(f"larger than {MAX_CONFIG_BYTES >> 20} MiB; a config file is a few KiB")
    return data.decode("utf-8", errors="replace")


def check_config_files(paths) -> None:
    """A LabelwiseError for the first config file that repeats a key or expands beyond
    MAX_CONFIG_VALUES.  The Snakefile calls it on the files Snakemake loaded (with its own YAML
    reader, which keeps the last of repeated keys and builds aliases as shared values)."""
    for path in paths:
        try:
            read_yaml(read_config_text(path))
        except OSError:
            continue  # Snakemake reported unreadable files already
        except ConfigTooLarge as exc:
            raise LabelwiseError(f"config file {path}: {exc}") from None
        except yaml.constructor.ConstructorError as exc:
            if "appears twice" in str(exc.problem):
                raise LabelwiseError(f"config file {path}: {exc.problem}") from None
        except yaml.YAMLError:
            continue  # Snakemake read it (JSON, yte); only repeated keys and sizes are checked here


def check_size(config) -> None:
    """LabelwiseError when `config` (as Snakemake built it: aliases are shared values, not copies)
    holds more than MAX_CONFIG_VALUES values once expanded; before anything prints or copies it."""
    memo: dict[int, int] = {}

    def values(obj, depth: int) -> int:
        if id(obj) in memo:
            return memo[id(obj)]
        if depth > 100:
            raise LabelwiseError("config: nested more than 100 levels deep (a config has 4); it cannot be a config")
        children = list(obj.keys()) + list(obj.values()) if isinstance(obj, dict) else obj
        total = 1
        if isinstance(obj, (dict, list, tuple)):
            for child in children:
                total += values(child, depth + 1)
                if total > MAX_CONFIG_VALUES:
                    raise LabelwiseError(f"config: {_too_large('it')}")
        memo[id(obj)] = total
        return total

    values(config, 0)


def _unshared(value):
    """`value` with every mapping and list rebuilt, so that none appears twice (YAML aliases share them)."""
    if isinstance(value, dict):
        return {k: _unshared(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_unshared(v) for v in value]
    return value


def check_numbers(config, where: str = "") -> None:
    """LabelwiseError naming the first key whose value is NaN or ±inf: JSON Schema's `minimum` and
    `maximum` let NaN through (every comparison with NaN is false), and no setting means infinity."""
    if isinstance(config, dict):
        items = config.items()
    elif isinstance(config, (list, tuple)):
        items = enumerate(config)
    else:
        if isinstance(config, float) and not math.isfinite(config):
            raise LabelwiseError(f"config key {where or '<top level>'}: {config} is not a finite number; give a number")
        return
    for key, value in items:
        check_numbers(value, f"{where}.{key}" if where else str(key))


def load_schema() -> dict:
    """The schema file with every registered model (labelwise.models) under `models:`: a model the
    file does not name takes the settings section of the model its entry names (Model.settings), and
    scaling.model accepts the per-label models."""
    schema = yaml.safe_load(SCHEMA_PATH.read_text())
    sections = schema["properties"]["models"]["properties"]
    registry = models.registry()  # the plugins' models too
    unknown = [name for name in sections if name not in registry]
    if unknown:
        raise LabelwiseError(f"{SCHEMA_PATH}: models {unknown} are not in the registry labelwise.models; register them")
    for entry in registry.values():
        if entry.name not in sections:
            if entry.schema_section not in sections:
                raise LabelwiseError(
                    f"model {entry.name!r}: its settings section {entry.schema_section!r} is not "
                    f"under models: in {SCHEMA_PATH}; name one of {', '.join(sections)}"
                )
            sections[entry.name] = dict(copy.deepcopy(sections[entry.schema_section]), description=entry.title)
    schema["properties"]["scaling"]["properties"]["model"]["enum"] = [*models.per_label(), None]
    return schema


def gan_maximum(key: str) -> int:
    """The schema's maximum of a GAN setting (`width`, `latent_dim`, `batch_size`): what a generator
    file may declare too."""
    return yaml.safe_load(SCHEMA_PATH.read_text())["$defs"]["gan"]["properties"][key]["maximum"]


def section_defaults(section: str) -> dict:
    """The schema's default of every key of a top-level section (e.g. `evaluation`) that has one: the
    one source of the defaults that code used without a config needs too.  Read from the schema file
    as it is (no model plugin is imported: modules call this when they are imported)."""
    if section == "models":
        raise ValueError("the models' defaults depend on the registry: use load_schema()")
    keys = yaml.safe_load(SCHEMA_PATH.read_text())["properties"][section]["properties"]
    return {k: copy.deepcopy(v["default"]) for k, v in keys.items() if "default" in v}


def schema_file() -> str:
    """What the Snakefile gives `snakemake.utils.validate` (a path): the schema file itself when it
    names every registered model, else `load_schema()` written next to the Snakemake metadata."""
    schema = load_schema()
    if schema == yaml.safe_load(SCHEMA_PATH.read_text()):
        return str(SCHEMA_PATH)
    written = Path(".snakemake", "labelwise", "config.schema.json").resolve()  # validate reads relative to rules/
    written.parent.mkdir(parents=True, exist_ok=True)
    # Atomic: every job of a cluster run parses the Snakefile, possibly at the same moment.
    write_text(written, json.dumps(schema, indent=1))
    return str(written)


def _with_defaults(validator_class):
    """A validator that fills `default`s as it validates (jsonschema FAQ recipe, as snakemake does)."""
    validate_properties = validator_class.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for name, sub in properties.items():
                if "default" in sub:
                    instance.setdefault(name, copy.deepcopy(sub["default"]))
        yield from validate_properties(validator, properties, instance, schema)

    return jsonschema.validators.extend(validator_class, {"properties": set_defaults})


def _key(error) -> str:
    return ".".join(str(p) for p in error.absolute_path) or "<top level>"


def _allowed_keys(fragment: dict, root: dict) -> set[str]:
    """Property names a schema fragment admits, including those of local `$ref`s in its allOf."""
    keys = set(fragment.get("properties", {}))
    for part in fragment.get("allOf", []):
        ref = part.get("$ref", "")
        if ref.startswith("#/"):
            target = root
            for step in ref[2:].split("/"):
                target = target[step]
            keys |= _allowed_keys(target, root)
        else:
            keys |= _allowed_keys(part, root)
    return keys


def _describe(error, root: dict) -> str:
    """One line: the key, the offending value and what is allowed."""
    key = _key(error)
    if error.validator in ("additionalProperties", "unevaluatedProperties"):
        allowed = sorted(_allowed_keys(error.schema, root))
        extra = sorted(set(error.instance) - set(allowed)) if isinstance(error.instance, dict) else []
        unknown = ", ".join(repr(e) for e in extra) or error.message
        if list(error.absolute_path)[-1:] == ["models"]:
            return f"config key models: unknown model {unknown}; known models: {', '.join(allowed)}"
        where = key if error.absolute_path else "top level"
        return f"config key {where}: unknown key {unknown}; allowed keys: {', '.join(allowed)}"
    if error.validator == "oneOf" and error.context:
        # Report the branch that got furthest into the value (e.g. a list with one bad item).
        deepest = max(error.context, key=lambda e: len(list(e.absolute_path)))
        if len(list(deepest.absolute_path)) > len(list(error.absolute_path)):
            return _describe(deepest, root)
        return f"config key {key}: {error.instance!r} is not valid; {error.schema.get('description', error.message)}"
    if error.validator in ("pattern", "maxLength") and isinstance(error.instance, str):
        why = error.schema.get("description", error.message)
        return f"config key {key}: {brief_repr(error.instance)} is not allowed; {why}"
    return f"config key {key}: {error.message}"


def explain_error(config: dict, schema: dict | None = None) -> str | None:
    """The one-line description of the most telling schema violation in `config`, or None if valid."""
    schema = schema or load_schema()
    validator = jsonschema.Draft202012Validator(schema)

    def rank(e):
        # Unknown-key errors last: a failed sub-schema also marks its keys "unevaluated".
        return (e.validator in ("additionalProperties", "unevaluatedProperties"), -len(list(e.absolute_path)), _key(e))

    errors = sorted(validator.iter_errors(config), key=rank)
    return _describe(errors[0], schema) if errors else None


def _leaf_errors(errors):
    for error in errors:
        if error.context:
            yield from _leaf_errors(error.context)
        else:
            yield error


# YAML 1.1 reads these unquoted words as booleans (`inception: off` is False).
_YAML11_WORDS = {False: ("off", "no", "false", "n"), True: ("on", "yes", "true", "y")}


def read_yaml_values(config: dict, schema: dict | None = None) -> dict:
    """Give config values the type the schema needs where YAML readers got it wrong, in place.

    Three readings reach here: Snakemake reads `--config models='{wcgan: {width: 8}}'` with YAML's
    BaseLoader, so every nested scalar arrives as a string ('8', '0.5', 'true', 'null'); Snakemake and
    PyYAML read config files as YAML 1.1, so `lr: 1e-4` arrives as the string '1e-4' and an unquoted
    `inception: off` as False.  Where the schema rejects a string but accepts its `read_yaml` reading
    (YAML 1.1 plus 1.2's `1e-4`), or accepts that reading's type (so that `iterations: -5` is
    reported as below the minimum, not as "not an integer"), the reading replaces it; where it
    rejects a boolean but accepts a YAML 1.1 word for it ('off'), the word replaces it.  Anything
    else is left for validation to report.
    """
    check_size(config)  # the readings below print values: an alias bomb must not be expanded
    for key in list(config):  # aliases as copies: defaults filled in one model must not reach another
        config[key] = _unshared(config[key])
    schema = schema or load_schema()
    validator = jsonschema.Draft202012Validator(schema)
    for _ in range(10_000):  # one value per round: a replaced value changes the errors of the rest
        for error in _leaf_errors(validator.iter_errors(config)):
            path = list(error.absolute_path)
            if not path:
                continue
            if isinstance(error.instance, bool):
                words = [w for w in _YAML11_WORDS[error.instance] if validator.evolve(schema=error.schema).is_valid(w)]
                if not words:
                    continue
                value = words[0]
            elif isinstance(error.instance, str):
                try:
                    value = read_yaml(error.instance)
                except yaml.YAMLError:
                    continue
                if isinstance(value, str):
                    continue
                right_type = error.validator == "type" and validator.evolve(
                    schema={"type": error.validator_value}
                ).is_valid(value)
                if not right_type and not validator.evolve(schema=error.schema).is_valid(value):
                    continue
            else:
                continue
            parent = config
            for step in path[:-1]:
                parent = parent[step]
            parent[path[-1]] = value
            break
        else:
            return config
    return config


def validate_config(config: dict) -> dict:
    """Validate `config` in place against the schema, filling defaults; LabelwiseError if invalid
    (a NaN or infinite number too)."""
    check_size(config)
    check_numbers(config)
    schema = load_schema()
    message = explain_error(config, schema)
    if message:
        raise LabelwiseError(message)
    _with_defaults(jsonschema.Draft202012Validator)(schema).validate(config)
    return config


def merge_config(base: dict, overlay: dict) -> dict:
    """`overlay` laid over `base`, in place, as Snakemake lays one config file over the one before
    (snakemake.utils.update_config; tests/test_presets.py compares them): mappings merge key by key,
    any other value, a list included, replaces; `base` is returned."""
    for key, value in overlay.items():
        if not isinstance(value, dict):
            base[key] = copy.deepcopy(value)
            continue
        below = base.get(key)
        if not isinstance(below, dict):
            if key in base and not value:
                continue  # as Snakemake: an empty mapping laid over a value keeps the value
            below = base[key] = {}
        merge_config(below, value)
    return base


def load_config(*paths: str | Path) -> dict:
    """Config files composed as the Snakefile composes its `--configfile`s: each read with repeated
    keys refused, merged in order (`merge_config`), values typed by `read_yaml_values`, validated,
    defaults filled."""
    if not paths:
        raise LabelwiseError("no config file given; name one (e.g. config.yaml or presets/cifar10.yaml)")
    config: dict = {}
    for path in paths:
        merge_config(config, read_config_file(path))
    return validate_config(read_yaml_values(config))


def read_config_file(path: str | Path) -> dict:
    """One config file's mapping, as written: repeated keys refused, one error line naming the file."""
    path = Path(path)
    try:
        config = read_yaml(read_config_text(path)) or {}
    except FileNotFoundError:
        raise LabelwiseError(f"config file {path} not found") from None
    except OSError as exc:
        raise LabelwiseError(f"config file {path}: cannot read it ({exc.strerror or exc})") from None
    except ConfigTooLarge as exc:
        raise LabelwiseError(f"config file {path}: {exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        problem = " ".join(str(getattr(exc, "problem", None) or exc).split())
        raise LabelwiseError(f"config file {path} is not valid YAML{where}: {problem}") from None
    if not isinstance(config, dict):
        raise LabelwiseError(f"config file {path} must hold a mapping of sections, got {type(config).__name__}")
    return config


# The settings training reads without a default (labelwise.train): `--settings` must give them.
TRAIN_REQUIRED = {"model": ["width", "latent_dim", "batch_size", "betas", "critic_steps"], "budget": ["iterations"]}


def check_train_settings(text: str, model: str) -> dict:
    """`labelwise train --settings`: the JSON of `labelwise.plan.train_settings` that the train rule
    passes ({"model": <the model's section>, "budget": <budget>, "seed": <seed>}), checked as the config
    is (finite numbers, the schema's types, minima and maxima, the keys of TRAIN_REQUIRED present);
    LabelwiseError in one line otherwise.  Returned as given, without defaults: the settings are the
    checkpoints' fingerprint.  The budget's maxima are left out: a conditional model's budget is the
    per-label one times the number of labels."""
    try:
        settings = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise LabelwiseError(f"train --settings is not valid JSON ({' '.join(str(exc).split())[:200]})") from None
    if not isinstance(settings, dict):
        raise LabelwiseError("train --settings must be a JSON object {model, budget, seed}")
    try:
        check_size(settings)
        check_numbers(settings)
    except LabelwiseError as exc:
        raise LabelwiseError(f"train --settings: {str(exc).removeprefix('config ')}") from None
    schema = load_schema()
    section = models.get(model).schema_section
    budget = copy.deepcopy(schema["properties"]["budget"])
    for key in budget["properties"].values():
        key.pop("maximum", None)
    sub = {
        "$defs": schema["$defs"],
        "type": "object",
        "additionalProperties": False,
        "required": ["model", "budget", "seed"],
        "properties": {
            "model": dict(schema["properties"]["models"]["properties"][section], required=TRAIN_REQUIRED["model"]),
            "budget": dict(budget, required=TRAIN_REQUIRED["budget"]),
            "seed": schema["properties"]["seed"],
        },
    }
    message = explain_error(settings, sub)
    if message:
        raise LabelwiseError(f"train --settings: {message.removeprefix('config ')}")
    return settings
