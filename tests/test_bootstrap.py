"""The lesion-cluster bootstrap on test sets with classes of one or two lesions: small classes
share a stratum (by hand and by coverage), their intervals are withheld, class averages are
flagged, and comparisons that lean on them are never tests."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import REPO

from dermflow.evaluation.bootstrap import (
    MIN_LESIONS,
    cluster_weights,
    lesion_counts,
    pooled_classes,
    resample_metrics,
    resampling_strata,
    summarize,
    too_few,
)
from dermflow.evaluation.compare import TOO_FEW, compare_experiments
from dermflow.evaluation.evaluate import evaluate_experiment
from dermflow.evaluation.metrics import HEADLINE, METRICS, metric_values
from dermflow.evaluation.significance import holm

CLASSES = [f"c{k}" for k in range(7)]
DEMO_LESIONS = (6, 4, 1, 1, 1, 1, 1)  # the demo's test split: 5 of 7 classes have one lesion
DEMO_RIGHT = (0.8, 0.7, 0.7, 0.6, 0.8, 0.7, 0.6)  # chance a lesion of each class is right


def table(labels: np.ndarray, preds: np.ndarray, lesions: np.ndarray, k: int = 7,
          split: str = "test") -> pd.DataFrame:
    """A prediction table: one row an image, confidence 0.9 on the predicted class."""
    probs = np.full((len(labels), k), 0.1 / (k - 1))
    probs[np.arange(len(labels)), preds] = 0.9
    return pd.DataFrame({"image_id": [f"ISIC_{i:07d}" for i in range(len(labels))],
                         "lesion_id": [f"HAM_{x:07d}" for x in lesions], "split": split,
                         "label": labels, "pred": preds,
                         **{f"prob_{c}": probs[:, j] for j, c in enumerate(CLASSES[:k])}})


def clustered_split(rng: np.random.Generator, lesions_per_class: tuple[int, ...],
                    right: tuple[float, ...]) -> pd.DataFrame:
    """A test split drawn as the stratified split draws one: a fixed number of lesions a
    class, 1-6 images a lesion, all images of a lesion right or wrong together."""
    k = len(lesions_per_class)
    lesion_class = np.repeat(np.arange(k), lesions_per_class)
    sizes = rng.integers(1, 7, len(lesion_class))
    correct = rng.random(len(lesion_class)) < np.asarray(right)[lesion_class]
    wrong = (lesion_class + rng.integers(1, k, len(lesion_class))) % k
    preds = np.where(correct, lesion_class, wrong)
    return table(np.repeat(lesion_class, sizes), np.repeat(preds, sizes),
                 np.repeat(np.arange(len(lesion_class)), sizes), k)


def test_classes_below_the_minimum_share_one_stratum_which_fills_up_to_it():
    assert resampling_strata(np.array([10, 3, 1, 1]), 5).tolist() == [0, 1, 1, 1]
    # a pool of one lesion is no better than none: the smallest other class joins it
    assert resampling_strata(np.array([10, 6, 1]), 5).tolist() == [0, 1, 1]
    assert resampling_strata(np.array([10, 6, 6, 1]), 5).tolist() == [0, 1, 2, 1]  # tie: first
    assert resampling_strata(np.array([1, 2, 1]), 5).tolist() == [0, 0, 0]  # all tiny: one
    assert resampling_strata(np.array([3]), 5).tolist() == [0]  # one class: nothing to pool
    assert resampling_strata(np.array([10, 5, 5]), 5).tolist() == [0, 1, 2]  # none below


def test_pooled_weights_hand_computed_case():
    """Class a: five one-image lesions (a stratum of its own at min_clusters = 2); classes b
    (one lesion of two images) and c (one of one) share a stratum of two lesions. Each
    resample draws a's lesions 5 times from a, and 2 times from {b, c}: b's lesion is drawn
    0, 1 or 2 times w.p. 1/4, 1/2, 1/4, its two images always together, and b and c always
    add up to 2. Without pooling b is drawn once in every resample: no variation at all."""
    labels = np.array([0, 0, 0, 0, 0, 1, 1, 2])
    lesions = np.array([0, 1, 2, 3, 4, 5, 5, 6])
    weights = cluster_weights(lesions, 20000, seed=0, strata=labels, min_clusters=2)
    assert (weights[:, :5].sum(1) == 5).all()
    assert (weights[:, 5] == weights[:, 6]).all()
    assert (weights[:, 5] + weights[:, 7] == 2).all()
    drawn = np.bincount(weights[:, 5].astype(int), minlength=3) / len(weights)
    assert drawn == pytest.approx([0.25, 0.5, 0.25], abs=0.01)
    assert weights[:, 0].mean() == pytest.approx(1, abs=0.02)
    assert weights[:, 0].var() == pytest.approx(5 * 0.2 * 0.8 / 1, abs=0.03)  # Binomial(5, 1/5)
    unpooled = cluster_weights(lesions, 200, seed=0, strata=labels)
    assert (unpooled[:, 5:] == 1).all()


def test_a_test_set_of_tiny_classes_is_resampled_unstratified():
    labels = np.array([0, 0, 1, 2, 2, 2])
    lesions = np.array([0, 1, 2, 3, 3, 4])
    pooled = cluster_weights(lesions, 300, seed=4, strata=labels, min_clusters=5)
    assert (pooled == cluster_weights(lesions, 300, seed=4)).all()


def test_lesion_counts_name_the_classes_below_the_minimum_and_those_pooled():
    labels = np.array([0] * 12 + [1] * 5 + [2] * 2 + [4])  # class 3: not in this set
    rows = table(labels, labels, np.r_[np.arange(12) // 2, 6 + np.arange(5), 11, 11, 12], k=5)
    lesions = lesion_counts(rows, CLASSES[:5])
    assert lesions == {"c0": 6, "c1": 5, "c2": 1, "c3": 0, "c4": 1}
    assert too_few(lesions, 5) == ["c2", "c3", "c4"]
    # c2 and c4 hold 2 lesions: c1, the smallest other class, fills the pool
    assert pooled_classes(lesions, 5) == ["c1", "c2", "c4"]
    assert pooled_classes({"c0": 3}, 5) == []  # one class: no other to share with


def coverage(lesions_per_class: tuple[int, ...], min_lesions: int, trials: int = 200,
             ) -> dict[str, float]:
    """Share of simulated test splits whose 95% interval (B = 200) holds the true accuracy
    and balanced accuracy. Each split has the given lesions a class and 1-6 images a lesion
    (drawn once), and draws anew which lesions are right (DEMO_RIGHT): all images of a
    lesion right or wrong together."""
    rng = np.random.default_rng(2)
    k = len(lesions_per_class)
    lesion_class = np.repeat(np.arange(k), lesions_per_class)
    sizes = rng.integers(1, 7, len(lesion_class))
    labels, lesions = np.repeat(lesion_class, sizes), np.repeat(np.arange(len(sizes)), sizes)
    right = np.asarray(DEMO_RIGHT[:k])
    truth = {"accuracy": np.dot(sizes, right[lesion_class]) / sizes.sum(),
             "balanced_accuracy": right.mean()}
    weights = cluster_weights(lesions, 200, 0, labels, min_lesions)
    covered = dict.fromkeys(truth, 0)
    for _ in range(trials):
        correct = rng.random(len(sizes)) < right[lesion_class]
        wrong = (lesion_class + rng.integers(1, k, len(sizes))) % k
        preds = np.repeat(np.where(correct, lesion_class, wrong), sizes)
        values = metric_values(labels, np.eye(k)[preds], weights, tuple(truth))
        for name, true in truth.items():
            low, high = np.nanpercentile(values[name], [2.5, 97.5])
            covered[name] += low <= true <= high
    return {name: n / trials for name, n in covered.items()}


def test_pooling_small_classes_brings_coverage_near_nominal():
    """Measured (200 simulated splits each, B = 200). The demo's split (DEMO_LESIONS, 15
    lesions): accuracy's 95% interval held the truth in 86.5% of splits with pooling and
    59% with every class its own stratum (the old estimator: its one-lesion classes never
    vary); an unstratified bootstrap reaches 91.5% there, the percentile interval's own
    limit at 15 lesions. With 40 and 20 lesions in the largest classes (40, 20, 2, 2, 1,
    1, 1), pooling covers 92.5%. Balanced accuracy weighs each one-lesion class as a
    seventh: on the demo's split its coverage rose from 29% to 74.5%, still well below
    nominal, which is why class averages are flagged rather than trusted."""
    demo_pooled, demo_old = coverage(DEMO_LESIONS, MIN_LESIONS), coverage(DEMO_LESIONS, 1)
    larger = coverage((40, 20, 2, 2, 1, 1, 1), MIN_LESIONS)
    assert demo_pooled["accuracy"] >= 0.83 and demo_old["accuracy"] <= 0.75
    assert demo_old["balanced_accuracy"] < 0.45 and 0.65 < demo_pooled["balanced_accuracy"] < 0.9
    assert 0.91 <= larger["accuracy"] <= 0.98


def test_small_classes_intervals_are_withheld_and_class_averages_flagged():
    rng = np.random.default_rng(0)
    rows = clustered_split(rng, DEMO_LESIONS, DEMO_RIGHT)
    few = too_few(lesion_counts(rows, CLASSES), MIN_LESIONS)
    assert few == CLASSES[1:]
    summary = summarize(resample_metrics(rows, resamples=200, seed=0), CLASSES, few)
    per_class = summary[summary["scope"] != "overall"]
    small = per_class["scope"].isin(few)
    assert per_class.loc[small, ["se", "ci_low", "ci_high"]].isna().all().all()
    assert per_class.loc[small, "too_few_lesions"].all()
    assert per_class.loc[~small, "se"].notna().all() and not per_class.loc[
        ~small, "too_few_lesions"].any()
    overall = summary[summary["scope"] == "overall"].set_index("metric")
    for name, metric in METRICS.items():
        assert overall.loc[name, "too_few_lesions"] == metric.class_average, name
    assert overall.loc["accuracy", "se"] > 0


def outputs(tmp_path: Path) -> dict[str, str]:
    return {f"out_{k}": str(tmp_path / name) for k, name in (
        ("json", "evaluation.json"), ("bootstrap", "bootstrap.csv"), ("roc", "roc.png"),
        ("pr", "pr.png"), ("confusion", "confusion.png"), ("bootstrap_png", "b.png"))}


def test_evaluation_names_the_classes_with_too_few_lesions(tmp_path):
    """The demo's split: evaluation.json says which classes are below report.min_lesions and
    which were pooled, and accuracy's SE is about a binomial SE over its 15 lesions (about
    0.11 against 0.096), not the half of it (about 0.05) that the two larger classes alone gave."""
    rng = np.random.default_rng(2)
    rows = clustered_split(rng, DEMO_LESIONS, DEMO_RIGHT)
    rows.to_csv(tmp_path / "predictions.csv", index=False)
    report = evaluate_experiment(str(tmp_path / "predictions.csv"), experiment="demo",
                                 resamples=500, seed=0, min_lesions=5, **outputs(tmp_path))
    saved = json.loads((tmp_path / "evaluation.json").read_text())
    assert saved["bootstrap"]["too_few_lesions"] == CLASSES[1:]
    assert saved["bootstrap"]["min_lesions"] == 5
    assert saved["bootstrap"]["pooled"] == CLASSES[1:]
    assert saved["per_class"]["c3"] == {**saved["per_class"]["c3"], "lesions": 1,
                                        "too_few_lesions": True}
    assert saved["bootstrap"]["overall"]["balanced_accuracy"]["too_few_lesions"] is True
    assert saved["bootstrap"]["overall"]["accuracy"]["too_few_lesions"] is False
    boot = pd.read_csv(tmp_path / "bootstrap.csv")
    assert boot.loc[boot["scope"] == "c3", "lesions"].eq(1).all()
    acc = report["overall"]["accuracy"]
    lesion_binomial = np.sqrt(acc * (1 - acc) / sum(DEMO_LESIONS))
    assert report["bootstrap"]["overall"]["accuracy"]["se"] > 0.8 * lesion_binomial


def two_splits(tmp_path: Path, name: str, right: float) -> str:
    """One experiment's predictions on the same demo-sized test split and the same large
    external set (one image a cluster, 40 of every class): right with chance ``right``."""
    test = clustered_split(np.random.default_rng(0), DEMO_LESIONS, DEMO_RIGHT)
    labels = np.repeat(np.arange(7), 40)
    rng = np.random.default_rng(int(right * 100))
    external = table(labels, np.where(rng.random(len(labels)) < right, labels, (labels + 1) % 7),
                     np.arange(len(labels)), split="external")
    external["lesion_id"] = None
    external["image_id"] = "EXT_" + external["image_id"]
    rng = np.random.default_rng(int(right * 100) + 1)
    test["pred"] = np.where(rng.random(len(test)) < right, test["label"], test["pred"])
    probs = np.full((len(test), 7), 0.1 / 6)
    probs[np.arange(len(test)), test["pred"]] = 0.9
    test[[f"prob_{c}" for c in CLASSES]] = probs
    path = tmp_path / f"{name}.csv"
    pd.concat([test, external]).to_csv(path, index=False)
    return str(path)


def test_differences_on_a_set_with_too_few_lesions_are_noted_and_not_holm_counted(tmp_path):
    """Class-average differences on the demo-sized split carry the note (the headline reads
    it: only declared rows without one are counted) and no Holm p; the external set's are
    Holm-adjusted among themselves alone, as if the others were not there."""
    paths = {"a": two_splits(tmp_path, "a", 0.9), "b": two_splits(tmp_path, "b", 0.5),
             "c": two_splits(tmp_path, "c", 0.6)}
    found = compare_experiments(paths, [("a", "b"), ("a", "c")], resamples=400, seed=0,
                                out_csv=str(tmp_path / "comparisons.csv"), min_lesions=5)
    test = found[found["split"] == "test"]
    assert len(test) == (2 + 3) * len(HEADLINE)  # declared and exploratory pairs
    assert test["note"].str.startswith(TOO_FEW).all()
    assert test["note"].str.contains("classes c1, c2, c3, c4, c5, c6 below "
                                     "report.min_lesions=5").all()
    assert test["p_holm"].isna().all() and test["difference"].notna().all()
    external = found[(found["split"] == "external") & (found["scope"] == "declared")]
    assert external["note"].isna().all()
    assert external["p_holm"].to_numpy() == pytest.approx(holm(external["p_value"].to_numpy()))
    assert (external["p_holm"] < 0.05).any()  # a 30-point difference on 280 images holds
    saved = pd.read_csv(tmp_path / "comparisons.csv")
    declared = saved[saved["scope"] == "declared"]
    assert len(declared[declared["note"].isna()]) == len(external)  # what the headline counts


def test_the_library_default_is_the_configs():
    schema = yaml.safe_load((REPO / "workflow/schemas/config.schema.yaml").read_text())
    key = schema["properties"]["report"]["properties"]["min_lesions"]
    assert key["default"] == MIN_LESIONS
    assert yaml.safe_load((REPO / "config.yaml").read_text())["report"]["min_lesions"] \
        == MIN_LESIONS
