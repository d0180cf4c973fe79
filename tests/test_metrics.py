"""Metrics against hand-computed values and scikit-learn; the bootstrap's coverage and pairing."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import balanced_accuracy_score, f1_score, precision_score, recall_score

from dermflow.evaluation.metrics import (
    bootstrap,
    bootstrap_samples,
    confusion_batches,
    evaluate,
    expected_calibration_error,
    paired_difference,
    summarize_bootstrap,
)

CLASSES = ["a", "b", "c"]


def one_hot_probs(preds: np.ndarray, k: int = 3, confidence: float = 0.8) -> np.ndarray:
    probs = np.full((len(preds), k), (1 - confidence) / (k - 1))
    probs[np.arange(len(preds)), preds] = confidence
    return probs


def test_hand_computed_example():
    labels = np.array([0, 0, 0, 1, 1, 2])
    preds = np.array([0, 0, 1, 1, 2, 2])
    report = evaluate(labels, one_hot_probs(preds), CLASSES)
    a = report["per_class"]["a"]
    assert a["precision"] == 1.0 and a["recall"] == pytest.approx(2 / 3)
    assert a["specificity"] == 1.0 and a["support"] == 3
    assert a["accuracy"] == pytest.approx(5 / 6)  # one-vs-rest: only one 'a' missed
    b = report["per_class"]["b"]
    assert b["precision"] == 0.5 and b["recall"] == 0.5
    assert b["specificity"] == pytest.approx(3 / 4)
    assert report["overall"]["accuracy"] == pytest.approx(4 / 6)
    assert report["overall"]["balanced_accuracy"] == pytest.approx((2 / 3 + 1 / 2 + 1) / 3)
    assert report["confusion_matrix"] == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    assert report["confusion_matrix_normalized"][0] == pytest.approx([2 / 3, 1 / 3, 0], abs=1e-4)
    # every prediction has confidence 0.8: ECE = |accuracy - 0.8|
    assert report["overall"]["ece"] == pytest.approx(abs(4 / 6 - 0.8))


def test_agrees_with_scikit_learn():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 3, 400)
    probs = rng.dirichlet(np.ones(3), 400)
    preds = probs.argmax(1)
    overall = evaluate(labels, probs, CLASSES)["overall"]
    assert overall["macro_f1"] == pytest.approx(f1_score(labels, preds, average="macro"))
    assert overall["weighted_f1"] == pytest.approx(f1_score(labels, preds, average="weighted"))
    assert overall["macro_precision"] == pytest.approx(
        precision_score(labels, preds, average="macro"))
    assert overall["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(labels, preds))
    # the vectorised bootstrap path computes the same numbers on the identity resample
    identity = np.arange(400)[None, :]
    boot = bootstrap(labels, preds, CLASSES, identity)
    assert boot["macro_f1"][0] == pytest.approx(overall["macro_f1"])
    assert boot["balanced_accuracy"][0] == pytest.approx(overall["balanced_accuracy"])
    assert boot["class_recall"][0] == pytest.approx(recall_score(labels, preds, average=None))


def test_confusion_batches_match_one_at_a_time():
    rng = np.random.default_rng(2)
    labels, preds = rng.integers(0, 3, 50), rng.integers(0, 3, 50)
    samples = bootstrap_samples(50, 5, seed=3)
    batch = confusion_batches(labels, preds, 3, samples)
    for b in range(5):
        assert (batch[b] == confusion_batches(labels[samples[b]], preds[samples[b]], 3)).all()


def test_bootstrap_interval_covers_the_true_accuracy_at_about_95_percent():
    """Classifiers right with probability 0.8: the 95% interval should hold 0.8 ~95% of the time."""
    rng = np.random.default_rng(4)
    covered = 0
    trials = 200
    for t in range(trials):
        labels = rng.integers(0, 3, 300)
        correct = rng.random(300) < 0.8
        preds = np.where(correct, labels, (labels + 1) % 3)
        values = bootstrap(labels, preds, CLASSES, bootstrap_samples(300, 400, seed=t))
        low, high = np.percentile(values["accuracy"], [2.5, 97.5])
        covered += low <= 0.8 <= high
    assert 0.88 <= covered / trials <= 0.99


def test_summary_has_mean_se_and_interval_per_metric():
    labels = np.array([0, 1, 2] * 20)
    values = bootstrap(labels, labels, CLASSES, bootstrap_samples(60, 100, seed=0))
    summary = summarize_bootstrap(values, CLASSES)
    acc = summary[(summary["scope"] == "overall") & (summary["metric"] == "accuracy")].iloc[0]
    assert acc["mean"] == 1.0 and acc["se"] == 0.0 and acc["ci_low"] == acc["ci_high"] == 1.0
    assert set(summary["scope"]) == {"overall", *CLASSES}


def test_paired_difference_detects_a_better_model_and_not_a_tie():
    rng = np.random.default_rng(5)
    labels = rng.integers(0, 3, 500)
    good = np.where(rng.random(500) < 0.9, labels, (labels + 1) % 3)
    bad = np.where(rng.random(500) < 0.6, labels, (labels + 2) % 3)
    samples = bootstrap_samples(500, 1000, seed=0)
    a = bootstrap(labels, good, CLASSES, samples)["accuracy"]
    b = bootstrap(labels, bad, CLASSES, samples)["accuracy"]
    better = paired_difference(a, b)
    assert better["ci_low"] > 0.2 and better["p_value"] < 0.01
    tie = paired_difference(a, a)
    assert tie["difference"] == 0 and tie["p_value"] == 1.0


def test_calibration_error_tells_calibrated_from_overconfident():
    rng = np.random.default_rng(6)
    confidence = rng.uniform(0.5, 1.0, 20000)
    probs = np.stack([confidence, 1 - confidence], axis=1)  # always predicts class 0
    calibrated = np.where(rng.random(20000) < confidence, 0, 1)
    overconfident = np.where(rng.random(20000) < confidence - 0.2, 0, 1)
    assert expected_calibration_error(probs, calibrated) < 0.02
    assert expected_calibration_error(probs, overconfident) == pytest.approx(0.2, abs=0.02)
