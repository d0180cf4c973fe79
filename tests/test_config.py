"""Config validation: defaults, and errors that name the offending key."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from dataclasses import asdict
from typing import Any

import pytest
import yaml

from dermflow import labels
from dermflow.config import load_config, schema_defaults, validate_config
from dermflow.data.hair import HairParams
from dermflow.errors import ConfigError
from dermflow.models.registry import experiment_settings
from dermflow.training import augmentation, loop, options, schedules, tta
from dermflow.training.baseline import PLAIN_LOOP


@pytest.fixture
def config(repo):
    """config.yaml, validated: the experiments, which it leaves to the schema, filled in."""
    return load_config(repo / "config.yaml")


def differences(restated: Any, default: Any, path: str = "") -> Iterator[str]:
    """Key paths where ``restated`` (a config file) differs from ``default`` (the schema's
    defaults), type included: 0 and 0.0 are different params to Snakemake. Keys the schema
    has no default for are the file's to set."""
    if isinstance(restated, dict) and isinstance(default, dict):
        for key in (k for k in restated if k in default):
            yield from differences(restated[key], default[key], f"{path}.{key}".lstrip("."))
    elif type(restated) is not type(default) or (
            isinstance(restated, list) and len(restated) != len(default)):
        yield f"{path}: {restated!r} here, {default!r} in the schema"
    elif isinstance(restated, list):
        for k, (a, b) in enumerate(zip(restated, default, strict=True)):
            yield from differences(a, b, f"{path}[{k}]")
    elif restated != default:
        yield f"{path}: {restated!r} here, {default!r} in the schema"


def test_config_yaml_restates_the_schema_defaults(repo):
    """The schema is the one home of every default; config.yaml may restate them for its
    readers but never differ from them."""
    restated = yaml.safe_load((repo / "config.yaml").read_text())
    assert list(differences(restated, schema_defaults())) == []
    assert set(restated) - set(schema_defaults()) == {"seed", "protocol", "on_bad_input",
                                                      "image_size"}, "the keys with no default"
    assert "experiments" not in restated, "Table 5 is listed once, in the schema"


def test_a_differing_default_is_named_by_its_key_path():
    restated = schema_defaults()
    restated["hair_removal"]["figure_images"] = []
    restated["classifier"]["ema"] = 0
    restated["experiments"][4]["model"] = "resnet50v2_mobilenetv2"
    assert list(differences(restated, schema_defaults())) == [
        "hair_removal.figure_images: [] here, ['ISIC_0024320', 'ISIC_0024342', 'ISIC_0024421',"
        " 'ISIC_0024508', 'ISIC_0029414'] in the schema",
        "classifier.ema: 0 here, 0.0 in the schema",
        "experiments[4].model: 'resnet50v2_mobilenetv2' here, 'resnet50v2_deit' in the schema"]


@pytest.mark.parametrize(("key", "module", "table", "implemented"), [
    ("augmentation", options, "AUGMENTATIONS", augmentation.AUGMENTATIONS),
    ("lr_schedule", schedules, "SCHEDULES", None),
    ("sampling", options, "SAMPLINGS", None),
    ("tta", options, "TTA_VIEWS", tta.VIEWS),
    ("optimizer", options, "OPTIMIZERS", loop.OPTIMIZERS),
])
def test_a_training_option_takes_the_names_of_its_table(config, monkeypatch, key, module,
                                                         table, implemented):
    """The schema's enum is the table's names (a torch-free table, read while planning, that
    names what implements the option), in the classifier section and in overrides alike."""
    names = getattr(module, table)
    if implemented is not None:
        assert tuple(implemented) == names, "the table names what implements the option"
    config["classifier"][key] = "new"
    with pytest.raises(ConfigError, match=f"classifier.{key}: 'new' is not one of"):
        validate_config(config)
    monkeypatch.setattr(module, table, (*names, "new"))
    config["experiments"][0]["overrides"] = {key: "new"}
    filled = validate_config(config)
    assert filled["classifier"][key] == filled["experiments"][0]["overrides"][key] == "new"


def test_an_experiment_task_takes_the_names_of_the_tasks_table(config, monkeypatch):
    config["experiments"][0]["task"] = "ordinal"
    with pytest.raises(ConfigError, match=r"experiments.0.task: 'ordinal' is not one of"):
        validate_config(config)
    monkeypatch.setattr(labels, "TASKS", (*labels.TASKS, "ordinal"))
    assert validate_config(config)["experiments"][0]["task"] == "ordinal"


def merged_profile(repo, config, *files: str) -> dict:
    """config.yaml with a profile's files merged over it, as Snakemake merges them."""
    merged = copy.deepcopy(config)
    for name in files:
        for key, value in yaml.safe_load((repo / name).read_text()).items():
            merged[key] = {**merged[key], **value} if isinstance(value, dict) else value
    return merged


@pytest.mark.parametrize("profile", ["demo", "papers", "dermagan", "cpu-smoke", "cpu-science",
                                     "gpu-quick", "cpu-study"])
def test_shipped_configs_are_valid(repo, config, profile):
    assert load_config(repo / "config.yaml")["protocol"] == "grouped"
    merged = merged_profile(repo, config, f"profiles/{profile}/{profile}.yaml")
    assert validate_config(merged)["experiments"] == merged["experiments"]


def test_the_study_trains_every_balance_mode_for_the_same_budget(repo, config):
    """profiles/cpu-study: one classifier and recipe, the same steps for every dataset; its
    paper-protocol and weak-identity targets valid configs of the C'GAN experiment alone,
    differing only where they say."""
    study = validate_config(merged_profile(repo, config, "profiles/cpu-study/cpu-study.yaml"))
    runs = {e["balance"]: experiment_settings(study["classifier"], e)
            for e in study["experiments"]}
    assert sorted(runs) == ["augment", "cgan", "none", "oversample"]
    assert len({json.dumps(s, sort_keys=True) for s in runs.values()}) == 1
    assert runs["cgan"]["epoch_images"] and runs["cgan"]["sampling"] == "balanced"
    assert study["cv"]["folds"] == 3 and study["protocol"] == "grouped"
    assert ["cgan", "oversample"] in study["report"]["comparisons"]
    paper = validate_config(merged_profile(repo, config, "profiles/cpu-study/cpu-study.yaml",
                                           "profiles/cpu-study-paper/paper.yaml"))
    assert paper["protocol"] == "paper" and paper["cv"]["folds"] == 1
    assert experiment_settings(paper["classifier"], paper["experiments"][0]) == runs["cgan"]
    weak = validate_config(merged_profile(repo, config, "profiles/cpu-study/cpu-study.yaml",
                                          "profiles/cpu-study-identity/identity.yaml"))
    assert weak["gan"]["identity_weight"] < study["gan"]["identity_weight"]
    assert {**weak["gan"], "identity_weight": 0} == {**study["gan"], "identity_weight": 0}
    assert weak["protocol"] == "grouped"
    assert experiment_settings(weak["classifier"], weak["experiments"][0]) == runs["cgan"]


def test_defaults_are_filled(config):
    del config["hair_removal"]["threshold"]
    del config["dataset"]["demo"]
    filled = validate_config(config)
    assert filled["hair_removal"]["threshold"] == 10
    assert filled["dataset"]["demo"]["n_images"] == 320
    assert "threshold" not in config["hair_removal"], "the caller's dict is not modified"


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda c: c.update(bogus=1), "bogus: unknown key"),
        (lambda c: c["hair_removal"].update(treshold=3), "hair_removal.treshold: unknown key"),
        (lambda c: c.update(image_size="big"), "image_size: 'big' is not of type 'integer'"),
        (lambda c: c["hair_removal"].update(threshold=300),
         "hair_removal.threshold: 300 is greater"),
        (lambda c: c["dataset"].update(source="ftp"), "dataset.source: 'ftp' is not one of"),
        (lambda c: c.update(protocol="leaky"), "protocol: 'leaky' is not one of"),
        (lambda c: c["classifier"].update(select="val_auc"),
         "classifier.select: 'val_auc' is not one of ['val_accuracy', 'val_balanced_accuracy',"),
        (lambda c: c["split"].update(val=0.3), "split: train + val + test must sum to 1"),
        (lambda c: c.pop("dataset"), "dataset: 'dataset' is a required property"),
    ],
)
def test_errors_name_the_key(config, edit, message):
    edit(config)
    with pytest.raises(ConfigError) as err:
        validate_config(config)
    assert message in str(err.value)


def test_every_problem_is_reported_at_once(config):
    config["seed"] = -1
    config["on_bad_input"] = "ignore"
    with pytest.raises(ConfigError) as err:
        validate_config(config)
    assert "seed:" in str(err.value) and "on_bad_input:" in str(err.value)


def test_the_baseline_trains_on_the_classifier_defaults():
    """The baseline's recipe options are the classifier section's defaults (the plain loop):
    a default changed in the schema and not there fails here."""
    classifier = schema_defaults()["classifier"]
    for key, value in PLAIN_LOOP.items():
        assert classifier[key] == (list(value) if isinstance(value, tuple) else value), key


def test_hair_removal_defaults_are_the_schemas():
    """HairParams restates the hair_removal defaults for callers of the library alone; a
    default changed in the schema and not there fails here."""
    section = schema_defaults()["hair_removal"]
    for name, value in asdict(HairParams()).items():
        assert section[name] == value, name


def test_each_missing_key_is_named_by_itself(config):
    del config["seed"], config["protocol"]
    with pytest.raises(ConfigError) as err:
        validate_config(config)
    assert "seed: 'seed' is a required property" in str(err.value)
    assert "protocol: 'protocol' is a required property" in str(err.value)


def test_strings_from_nested_command_line_config_are_typed(config):
    # snakemake --config 'split={seed: 7}' delivers '7'
    config["split"] = {"seed": "7", "train": "0.7", "val": "0.2", "test": "0.1"}
    config["hair_removal"]["enabled"] = "false"
    config["baseline"]["compile"] = "true"
    filled = validate_config(config)
    assert filled["split"]["seed"] == 7 and filled["split"]["val"] == 0.2
    assert filled["hair_removal"]["enabled"] is False and filled["baseline"]["compile"] is True
    config["split"]["seed"] = "seven"
    with pytest.raises(ConfigError, match="split.seed: 'seven' is not of type 'integer'"):
        validate_config(config)


def test_key_order_does_not_change_what_stages_see(config):
    """Snakemake compares params as written, so reordered keys must not look like a change."""
    reordered = copy.deepcopy(config)
    reordered["gan"] = dict(reversed(list(reordered["gan"].items())))
    reordered["experiments"] = [dict(reversed(list(e.items()))) for e in config["experiments"]]
    first, second = validate_config(config), validate_config(reordered)
    assert repr(first["gan"]) == repr(second["gan"])
    assert repr(first["experiments"]) == repr(second["experiments"])


@pytest.mark.parametrize(("change", "message"), [
    ({"image_size": 40}, "gan.depth"),
    ({"image_size": 56, "gan": {"depth": 3}}, "DeiT cuts 16-pixel patches"),
    ({"gan": {"kind": "dcgan", "dcgan": {"size": 48}}}, "gan.dcgan.size: must be a power of two"),
])
def test_sizes_the_networks_cannot_take_are_config_errors(config, change, message):
    for key, value in change.items():
        config[key] = {**config[key], **value} if isinstance(value, dict) else value
    with pytest.raises(ConfigError, match=message):
        validate_config(config)


def test_a_gan_balance_needs_that_generator(config):
    config["experiments"].append({"name": "d", "balance": "dcgan", "model": "dermagan_cnn"})
    with pytest.raises(ConfigError, match=r"\[6\]\.balance: dcgan needs gan.kind: dcgan"):
        validate_config(config)
    config["gan"] = {**config["gan"], "kind": "dcgan"}
    with pytest.raises(ConfigError, match=r"\[0\]\.balance: cgan needs gan.kind: cgan"):
        validate_config(config)
    config["experiments"] = config["experiments"][5:]  # the strong baseline and d
    assert validate_config(config)["gan"]["kind"] == "dcgan"


def test_experiment_names_are_unique(config):
    config["experiments"].append(dict(config["experiments"][0]))
    with pytest.raises(ConfigError, match="used more than once"):
        validate_config(config)


def test_recipe_keys_default_to_the_plain_loop(config):
    section = validate_config(config)["classifier"]
    assert {k: section[k] for k in ("optimizer", "lr_schedule", "lr_warmup_epochs",
                                    "label_smoothing", "sampling", "ema", "tta")} == {
        "optimizer": "adam", "lr_schedule": "constant", "lr_warmup_epochs": 0,
        "label_smoothing": 0, "sampling": "uniform", "ema": 0, "tta": "none"}
    del config["classifier"]["optimizer"], config["classifier"]["tta"]  # older config files
    assert validate_config(config)["classifier"]["tta"] == "none"


@pytest.mark.parametrize(("overrides", "message"), [
    ({"lr_schedule": "plateau"}, "lr_schedule plateau needs plateau_patience of at least 1"),
    ({"lr_schedule": "onecycle", "plateau_patience": 3}, "plateau_patience belongs to"),
    ({"lr_warmup_epochs": 2}, "lr_warmup_epochs 2 needs lr_schedule cosine or onecycle"),
    ({"tta": "rotate"}, "overrides.tta: 'rotate' is not one of"),
    ({"sampling_power": 2}, "overrides.sampling_power: 2 is greater than the maximum"),
])
def test_contradicting_recipe_keys_are_config_errors(config, overrides, message):
    config["experiments"][0]["overrides"] = overrides
    with pytest.raises(ConfigError, match=message):
        validate_config(config)


def test_recipe_keys_are_valid_in_overrides_and_plateau_patience_alone_still_means_plateau(
        config):
    config["experiments"][0]["overrides"] = {
        "optimizer": "adamw", "lr_schedule": "cosine", "lr_warmup_epochs": 0.5,
        "label_smoothing": 0.1, "sampling": "balanced", "sampling_power": 1, "ema": 0.999,
        "tta": "dihedral"}
    config["experiments"][1]["overrides"] = {"plateau_patience": 5}  # before lr_schedule
    config["experiments"][2]["overrides"] = {"lr_schedule": "plateau", "plateau_patience": 5}
    assert validate_config(config)["experiments"][0]["overrides"]["tta"] == "dihedral"
