"""evaluate/compare on prediction tables of either task (the classes come from the table)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import REPO

from dermflow.config import load_config, validate_config
from dermflow.errors import ConfigError
from dermflow.evaluation.compare import compare_experiments
from dermflow.evaluation.declared import declared_pairs
from dermflow.evaluation.evaluate import evaluate_experiment, plot_bootstrap
from dermflow.evaluation.metrics import HEADLINE
from dermflow.evaluation.predictions import classes_of
from dermflow.labels import BINARY, CLASSES


def predictions(classes: tuple[str, ...], n: int = 60, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % len(classes)
    probs = rng.dirichlet(np.ones(len(classes)), n)
    probs[np.arange(n), labels] += 1.0  # mostly right
    probs /= probs.sum(1, keepdims=True)
    table = pd.DataFrame({"image_id": [f"ISIC_{i:07d}" for i in range(n)], "split": "test",
                          "label": labels, **{f"prob_{c}": probs[:, k]
                                              for k, c in enumerate(classes)}})
    table["pred"] = probs.argmax(1)
    return table


def test_binary_predictions_are_evaluated_with_their_two_classes(tmp_path):
    path = tmp_path / "predictions.csv"
    predictions(BINARY).to_csv(path, index=False)
    outs = {k: str(tmp_path / f"{k}.{ext}") for k, ext in (
        ("json", "json"), ("bootstrap", "csv"), ("roc", "png"), ("pr", "png"),
        ("confusion", "png"), ("bootstrap_png", "png"))}
    report = evaluate_experiment(str(path), experiment="bin", resamples=50, seed=0,
                                 out_json=outs["json"],
                                 out_bootstrap=outs["bootstrap"], out_roc=outs["roc"],
                                 out_pr=outs["pr"], out_confusion=outs["confusion"],
                                 out_bootstrap_png=outs["bootstrap_png"])
    assert list(report["per_class"]) == ["benign", "malignant"]
    assert np.array(report["confusion_matrix"]).shape == (2, 2)
    assert report["overall"]["macro_roc_auc"] > 0.9
    assert json.loads(Path(outs["json"]).read_text())["n"] == 60


def test_experiments_of_different_tasks_are_not_compared(tmp_path):
    paths = {}
    for name, classes, seed in (("a", CLASSES, 0), ("b", CLASSES, 1), ("c", BINARY, 0)):
        paths[name] = str(tmp_path / f"{name}.csv")
        predictions(classes, seed=seed).to_csv(paths[name], index=False)
    table = compare_experiments(paths, [("a", "b")], resamples=50, seed=0,
                                out_csv=str(tmp_path / "c.csv"))
    declared = table[table["scope"] == "declared"]
    assert list(declared["metric"]) == list(HEADLINE) and (declared["a"] == "a").all()
    assert declared["p_holm"].notna().all() and (declared["p_holm"] >= declared["p_value"]).all()
    explored = table[table["scope"] == "exploratory"]
    assert list(dict.fromkeys(zip(explored["a"], explored["b"], strict=True))) == [
        ("a", "b"), ("a", "c"), ("b", "c")]
    assert explored["p_holm"].isna().all()  # exploratory: unadjusted
    paired = explored[(explored["a"] == "a") & (explored["b"] == "b")]
    assert paired["difference"].notna().all() and paired["note"].isna().all()
    other = explored[explored["b"] == "c"]
    assert len(other) == 2 * len(HEADLINE)
    assert (other["note"] == "different tasks: not compared").all()
    assert (table["unit"] == "lesion").all() and (table["resamples"] == 50).all()
    assert classes_of(predictions(BINARY)) == list(BINARY)


def experiments(*entries: tuple[str, str, str]) -> list[dict]:
    return [{"name": n, "balance": b, "model": m} for n, b, m in entries]


def test_declared_comparisons_default_to_the_proposed_model_against_existing_baselines():
    """Against the same model without C'GAN data, and against the strong baseline."""
    found = experiments(("prop", "cgan", "resnet50v2_deit"), ("aug", "augment", "resnet50v2_deit"),
                        ("cnn", "none", "resnet50v2_mobilenetv2"))
    assert declared_pairs(found, None) == [("prop", "aug")]  # no 'none' run of the same model
    found += experiments(("plain", "none", "resnet50v2_deit"))
    assert declared_pairs(found, None) == [("prop", "aug"), ("prop", "plain")]
    assert declared_pairs(experiments(("cnn", "cgan", "resnet50v2_mobilenetv2")), None) == []
    assert declared_pairs(found, [["cnn", "plain"]]) == [("cnn", "plain")]
    found += experiments(("strong", "none", "resnetv2_50"), ("strong_cgan", "cgan", "resnetv2_50"))
    found += [{"name": "strong_bin", "balance": "none", "model": "resnetv2_50", "task": "binary"},
              {"name": "paper_recipe", "balance": "none", "model": "resnetv2_50",
               "recipe": "other"}]
    assert declared_pairs(found, None) == [("prop", "aug"), ("prop", "plain"),
                                           ("prop", "strong")]  # real images, same task
    found += experiments(("rep", "oversample", "resnet50v2_deit"))
    assert declared_pairs(found, None)[:3] == [("prop", "aug"), ("prop", "rep"), ("prop", "plain")]


def test_an_unknown_experiment_in_the_declared_comparisons_is_a_config_error_naming_it():
    config = load_config(REPO / "config.yaml")
    config["report"]["comparisons"] = [["cgan_resnet50v2_deit", "nonexistent"]]
    with pytest.raises(ConfigError, match=r"report.comparisons\[0\]: unknown experiment "
                                          r"'nonexistent'"):
        validate_config(config)
    config["experiments"].append({"name": "bin", "balance": "none", "model": "asff_resnet50",
                                  "task": "binary"})
    config["report"]["comparisons"] = [["cgan_resnet50v2_deit", "bin"]]
    with pytest.raises(ConfigError, match="different tasks"):
        validate_config(config)


def test_bootstrap_figure_of_a_metric_constant_but_for_rounding(tmp_path):
    # a one-class classifier's balanced accuracy is 1/7 in every class-stratified resample,
    # computed in an order that leaves last-bit differences
    constant = np.full(200, 1 / 7) + np.arange(200) % 2 * np.spacing(1 / 7)
    plot_bootstrap({"balanced_accuracy": constant, "macro_f1": np.linspace(0.2, 0.4, 200)},
                   "one-class", str(tmp_path / "bootstrap.png"))
    assert (tmp_path / "bootstrap.png").stat().st_size > 0
