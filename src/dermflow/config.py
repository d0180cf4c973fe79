"""Config validation: every key is checked before any job runs.

The JSON schema (workflow/schemas/config.schema.yaml) is the single source of
truth for keys, types, ranges and defaults (config.yaml restates the defaults for its
readers, and tests/test_config.py holds the two together); the enums of names that a
table implements come from that table. Errors name the dotted key.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from dermflow import labels
from dermflow.errors import ConfigError
from dermflow.evaluation import selection
from dermflow.evaluation.declared import declared_pairs
from dermflow.gan.registry import BALANCES, GENERATORS
from dermflow.models.registry import MODELS, RECIPES, experiment_settings
from dermflow.training import options, schedules
from dermflow.training.schedules import CURVES

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "workflow" / "schemas" / "config.schema.yaml"


def _fill_defaults(schema: dict[str, Any], instance: Any) -> None:
    """Insert schema defaults for absent keys, recursively, before validation."""
    if not isinstance(instance, dict):
        return
    for key, sub in schema.get("properties", {}).items():
        if key not in instance and "default" in sub:
            instance[key] = copy.deepcopy(sub["default"])
        if key in instance:
            _fill_defaults(sub, instance[key])


SCALARS = {"integer": int, "number": (int, float), "boolean": bool}


def _coerce(schema: dict[str, Any], instance: Any) -> Any:
    """Typed values from strings where the schema wants a number or boolean.

    Snakemake parses nested ``--config 'split={seed: 7}'`` values with YAML's
    BaseLoader, so every nested scalar arrives as a string.
    """
    if isinstance(instance, dict):
        props = schema.get("properties", {})
        return {k: _coerce(props[k], v) if k in props else v for k, v in instance.items()}
    if isinstance(instance, list) and "items" in schema:
        return [_coerce(schema["items"], v) for v in instance]
    types = schema.get("type", [])
    types = [types] if isinstance(types, str) else types
    if "null" in types and instance in ("null", "~"):
        return None
    wanted = next((SCALARS[t] for t in types if t in SCALARS), None)
    if wanted is not None and isinstance(instance, str):
        try:
            value = yaml.safe_load(instance)
        except yaml.YAMLError:
            return instance
        if isinstance(value, wanted) and not (wanted is not bool and isinstance(value, bool)):
            return value
    enum = schema.get("enum")
    if enum and isinstance(instance, str) and instance not in enum:
        value = yaml.safe_load(instance) if instance in ("true", "false") else instance
        return value if value in enum else instance
    return instance


def _key(error: jsonschema.ValidationError) -> str:
    path = ".".join(str(p) for p in error.absolute_path)
    if error.validator == "additionalProperties":
        schema_keys = set(error.schema.get("properties", {}))
        unknown = sorted(set(error.instance) - schema_keys)
        path = ".".join([path, *unknown[:1]]) if path else ", ".join(unknown)
        return path
    if error.validator == "required":
        # one error per missing key, named only in its message ("'seed' is a required ...")
        missing = [k for k in error.validator_value if k not in error.instance]
        key = next((k for k in missing if error.message.startswith(repr(k))), missing[0])
        return ".".join([path, key]) if path else key
    return path or "<top level>"


def _errors(config: dict[str, Any], schema: dict[str, Any]) -> Iterator[str]:
    validator = jsonschema.Draft202012Validator(schema)
    for error in sorted(validator.iter_errors(config), key=lambda e: list(e.absolute_path)):
        if error.validator == "additionalProperties":
            yield f"{_key(error)}: unknown key"
        else:
            yield f"{_key(error)}: {error.message}"
    split = config.get("split", {})
    if all(isinstance(split.get(k), (int, float)) for k in ("train", "val", "test")):
        total = split["train"] + split["val"] + split["test"]
        if not math.isclose(total, 1.0, abs_tol=1e-6):
            yield f"split: train + val + test must sum to 1, not {total:g}"
    cv = config.get("cv", {})
    if isinstance(cv.get("seeds"), int) and cv["seeds"] > 1 and cv.get("folds") == 1:
        yield ("cv.seeds: several training seeds need cross-validation (cv.folds > 1); with "
               "one split, set cv.seeds: 1")
    experiments = config.get("experiments")
    if isinstance(experiments, list) and all(isinstance(e, dict) for e in experiments):
        names = [e.get("name") for e in experiments]
        for name in sorted({n for n in names if names.count(n) > 1}, key=str):
            yield f"experiments: the name {name!r} is used more than once"
        size = config.get("image_size")
        patched = [(e.get("name"), MODELS[e["model"]].patch_size) for e in experiments
                   if e.get("model") in MODELS and MODELS[e["model"]].patch_size > 1]
        if patched and isinstance(size, int) and size % patched[0][1]:
            name, patch = patched[0]
            yield (f"image_size: DeiT cuts {patch}-pixel patches, so experiment {name} needs "
                   f"image_size divisible by {patch} (it is {size})")
        pairs = config.get("report", {}).get("comparisons")
        if isinstance(pairs, list) and all(isinstance(e.get("name"), str) for e in experiments):
            try:
                declared_pairs(experiments, pairs)
            except ConfigError as err:
                yield str(err)
    gan = config.get("gan", {})
    if isinstance(experiments, list):
        for k, e in enumerate(experiments):
            balance = e.get("balance") if isinstance(e, dict) else None
            if balance in GENERATORS and gan.get("kind") != balance:
                yield (f"experiments[{k}].balance: {balance} needs gan.kind: {balance} (the run "
                       f"trains one generator; gan.kind is {gan.get('kind')})")
            if isinstance(e, dict) and e.get("model") in MODELS and e.get("recipe") in (
                    None, *RECIPES) and isinstance(config.get("classifier"), dict):
                yield from (f"experiments[{k}] ({e.get('name')}): {problem}" for problem in
                            _schedule_problems(experiment_settings(config["classifier"], e)))
    if gan.get("kind") in GENERATORS:
        yield from GENERATORS[gan["kind"]].check(config)


def _schedule_problems(settings: dict[str, Any]) -> Iterator[str]:
    """Learning-rate settings that contradict each other in an experiment's merged settings
    (the classifier section, the model's recipe, the overrides)."""
    schedule, patience = settings.get("lr_schedule"), settings.get("plateau_patience")
    if not isinstance(patience, int):
        return
    if schedule == "plateau" and patience < 1:
        yield "lr_schedule plateau needs plateau_patience of at least 1"
    if schedule in CURVES and patience > 0:
        yield (f"lr_schedule {schedule} and plateau_patience {patience}: plateau_patience "
               "belongs to lr_schedule plateau; set it to 0")
    warmup = settings.get("lr_warmup_epochs")
    if schedule not in CURVES and isinstance(warmup, (int, float)) and warmup > 0:
        yield (f"lr_warmup_epochs {warmup} needs lr_schedule cosine or onecycle (it is "
               f"{schedule})")


def _sorted(value: Any) -> Any:
    """Mappings with sorted keys, all the way down: reordering keys in a config file must
    not look like a parameter change to Snakemake, which compares params as written."""
    if isinstance(value, dict):
        return {k: _sorted(value[k]) for k in sorted(value)}
    if isinstance(value, list):
        return [_sorted(v) for v in value]
    return value


def load_schema(path: str | Path = SCHEMA_PATH) -> dict[str, Any]:
    """Read the config schema, with the names of the tables that implement them as its
    enums: a model, generator, balance mode, task or training option is added in its table
    alone."""
    schema = yaml.safe_load(Path(path).read_text())
    schema["properties"]["gan"]["properties"]["kind"]["enum"] = list(GENERATORS)
    experiment = schema["properties"]["experiments"]["items"]["properties"]
    experiment["balance"]["enum"] = list(BALANCES)
    experiment["model"]["enum"] = list(MODELS)
    experiment["recipe"]["enum"] = list(RECIPES)
    experiment["task"]["enum"] = list(labels.TASKS)
    for keys in (schema["properties"]["classifier"]["properties"],
                 experiment["overrides"]["properties"]):
        keys["augmentation"]["enum"] = list(options.AUGMENTATIONS)
        keys["lr_schedule"]["enum"] = list(schedules.SCHEDULES)
        keys["sampling"]["enum"] = list(options.SAMPLINGS)
        keys["tta"]["enum"] = list(options.TTA_VIEWS)
        keys["optimizer"]["enum"] = list(options.OPTIMIZERS)
        keys["monitor"]["enum"] = keys["select"]["enum"] = list(selection.MONITORS)
    return schema


def schema_defaults(path: str | Path = SCHEMA_PATH) -> dict[str, Any]:
    """The config the schema's defaults alone make, every section filled (keys without a
    default, such as ``seed``, left out): what validation gives a key a config omits."""
    def defaults(schema: dict[str, Any]) -> Any:
        value = copy.deepcopy(schema.get("default", {}))
        for key, sub in schema.get("properties", {}).items():
            if key not in value and ("default" in sub or "properties" in sub):
                value[key] = defaults(sub)
        return value

    return defaults(load_schema(path))


def validate_config(config: dict[str, Any],
                    schema_path: str | Path = SCHEMA_PATH) -> dict[str, Any]:
    """Return the config with defaults filled in; raise ConfigError listing every bad key."""
    schema = load_schema(schema_path)
    filled = _coerce(schema, copy.deepcopy(config))
    _fill_defaults(schema, filled)
    problems = list(_errors(filled, schema))
    if problems:
        raise ConfigError("invalid config:\n  " + "\n  ".join(problems))
    return _sorted(filled)


def load_config(path: str | Path, schema_path: str | Path = SCHEMA_PATH) -> dict[str, Any]:
    """Read and validate a config file."""
    with open(path) as fh:
        return validate_config(yaml.safe_load(fh) or {}, schema_path)
