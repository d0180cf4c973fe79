"""evaluate/compare on prediction tables of either task (the classes come from the table)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from dermflow.evaluation.compare import compare_experiments
from dermflow.evaluation.evaluate import evaluate_experiment
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
    report = evaluate_experiment(str(path), resamples=50, seed=0, out_json=outs["json"],
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
    table = compare_experiments(paths, resamples=50, seed=0, out_csv=str(tmp_path / "c.csv"))
    assert list(zip(table["a"], table["b"], strict=True)) == [
        ("a", "b"), ("a", "b"), ("a", "c"), ("a", "c"), ("b", "c"), ("b", "c")]
    paired = table[(table["a"] == "a") & (table["b"] == "b")]
    assert paired["difference"].notna().all() and (paired["note"] == "").all()
    other = table[table["b"] == "c"]
    assert len(other) == 4 and (other["note"] == "different tasks: not compared").all()
    assert classes_of(predictions(BINARY)) == list(BINARY)
