"""Metrics against hand-computed values and scikit-learn; every metric of the table under
weights; the lesion-cluster bootstrap by hand and by its coverage; Holm; p-value format."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import (
    balanced_accuracy_score,
    f1_score,
    precision_score,
    recall_score,
    roc_auc_score,
)

from dermflow.evaluation.bootstrap import cluster_weights, clusters_of, resample_metrics, summarize
from dermflow.evaluation.metrics import (
    METRICS,
    calibration_error,
    evaluate,
    metric_values,
    point,
    weighted_auc,
)
from dermflow.evaluation.selection import SELECTION, confusion, selection_scores
from dermflow.evaluation.significance import format_p, holm, paired_difference

CLASSES = ["a", "b", "c"]


def one_hot_probs(preds: np.ndarray, k: int = 3, confidence: float = 0.8) -> np.ndarray:
    probs = np.full((len(preds), k), (1 - confidence) / (k - 1))
    probs[np.arange(len(preds)), preds] = confidence
    return probs


def table(labels: np.ndarray, probs: np.ndarray, lesions: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame({"image_id": [f"I{i:05d}" for i in range(len(labels))],
                         "lesion_id": lesions, "label": labels,
                         **{f"prob_{c}": probs[:, k] for k, c in enumerate(CLASSES)}})


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
    assert overall["weighted_recall"] == pytest.approx(
        recall_score(labels, preds, average="weighted"))
    assert overall["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(labels, preds))
    assert overall["macro_roc_auc"] == pytest.approx(
        roc_auc_score(labels, probs, multi_class="ovr", average="macro"))


@pytest.mark.parametrize("name", sorted(METRICS))
def test_every_metric_under_integer_weights_equals_the_repeated_images(name):
    """Resample weights mean 'this image, this many times': the weighted value must be the
    value of the data set with the images repeated, for every metric of the table."""
    rng = np.random.default_rng(7)
    labels = rng.integers(0, 3, 60)
    probs = rng.dirichlet(np.ones(3) * 0.7, 60)
    probs[:10] = probs[10:20]  # ties in the scores
    weights = rng.integers(0, 4, (3, 60))
    got = metric_values(labels, probs, weights, (name,))[name]
    for b in range(3):
        repeated = np.repeat(np.arange(60), weights[b])
        assert got[b] == pytest.approx(point(labels[repeated], probs[repeated], (name,))[name])


def test_weighted_auc_matches_scikit_learn_with_ties():
    rng = np.random.default_rng(8)
    truth = rng.random(200) < 0.3
    scores = np.round(rng.random(200), 1)  # many ties
    weights = rng.integers(0, 3, (4, 200)).astype(float)
    got = weighted_auc(truth, scores, weights)
    for b in range(4):
        assert got[b] == pytest.approx(roc_auc_score(truth, scores, sample_weight=weights[b]))


def test_calibration_error_tells_calibrated_from_overconfident():
    rng = np.random.default_rng(6)
    confidence = rng.uniform(0.5, 1.0, 20000)
    probs = np.stack([confidence, 1 - confidence], axis=1)  # always predicts class 0
    calibrated = np.where(rng.random(20000) < confidence, 0, 1)
    overconfident = np.where(rng.random(20000) < confidence - 0.2, 0, 1)
    ones = np.ones((1, 20000))
    assert calibration_error(calibrated, probs, ones)[0] < 0.02
    assert calibration_error(overconfident, probs, ones)[0] == pytest.approx(0.2, abs=0.02)


def test_cluster_bootstrap_hand_computed_case():
    """Two lesions of one class: L1 with three images (two right), L2 with one (wrong).
    Each resample draws two lesions, so its accuracy is one of three values, and the four
    draws (L1 L1, L1 L2, L2 L1, L2 L2) are equally likely: 2/3 w.p. 1/4, 2/4 w.p. 1/2, 0
    w.p. 1/4."""
    rows = table(np.array([0, 0, 0, 0]), one_hot_probs(np.array([0, 0, 1, 1])),
                 np.array(["L1", "L1", "L1", "L2"]))
    weights = cluster_weights(clusters_of(rows), 20000, seed=0, strata=rows["label"])
    assert set(map(tuple, weights.astype(int))) <= {(2, 2, 2, 0), (1, 1, 1, 1), (0, 0, 0, 2)}
    accuracy = resample_metrics(rows, resamples=20000, seed=0, names=("accuracy",))["accuracy"]
    values, counts = np.unique(np.round(accuracy, 6), return_counts=True)
    assert list(values) == pytest.approx([0, 0.5, 2 / 3])
    assert counts / counts.sum() == pytest.approx([0.25, 0.5, 0.25], abs=0.01)
    assert accuracy.mean() == pytest.approx(0.25 * 2 / 3 + 0.5 * 0.5, abs=0.005)


def test_lesions_are_drawn_within_their_class_so_every_class_is_in_every_resample():
    labels = np.array([0] * 20 + [1] * 10 + [2] * 10)  # 10, 5 and 5 lesions
    rows = table(labels, one_hot_probs(labels), np.arange(40) // 2)  # two images a lesion
    weights = cluster_weights(clusters_of(rows), 500, seed=1, strata=labels, min_clusters=5)
    per_class = np.stack([weights[:, labels == c].sum(1) for c in range(3)], axis=1)
    assert (per_class == [20, 10, 10]).all()  # every class, with its images, in every resample
    values = resample_metrics(rows, resamples=500, seed=1, names=("balanced_accuracy",))
    assert (values["balanced_accuracy"] == 1).all()


def test_images_without_a_lesion_id_are_their_own_clusters():
    rows = pd.DataFrame({"image_id": ["a", "b", "c"], "lesion_id": ["L", None, ""]})
    clusters = clusters_of(rows)
    assert clusters[0] == "L" and len(set(clusters)) == 3
    assert list(clusters_of(rows.drop(columns="lesion_id"))) == ["a", "b", "c"]


def coverage(cluster: bool, trials: int = 200, truth: float = 0.8) -> float:
    """Share of trials whose 95% interval holds the true accuracy, on clustered data: lesions
    of 1-6 images, all images of a lesion right or wrong together (probability 0.8)."""
    rng = np.random.default_rng(11)
    covered = 0
    for t in range(trials):
        sizes = rng.integers(1, 7, 120)
        lesions = np.repeat(np.arange(120), sizes)
        labels = rng.integers(0, 3, len(lesions))
        right = np.repeat(rng.random(120) < truth, sizes)
        rows = table(labels, one_hot_probs(np.where(right, labels, (labels + 1) % 3)),
                     lesions if cluster else np.arange(len(lesions)))
        accuracy = resample_metrics(rows, resamples=400, seed=t, names=("accuracy",))
        low, high = np.percentile(accuracy["accuracy"], [2.5, 97.5])
        covered += low <= truth <= high
    return covered / trials


def test_lesion_clusters_cover_at_95_percent_where_images_do_not():
    assert 0.90 <= coverage(cluster=True) <= 0.99
    assert coverage(cluster=False) < 0.85  # images are not independent: too narrow


def test_summary_has_mean_se_and_interval_per_metric():
    labels = np.array([0, 1, 2] * 20)
    rows = table(labels, one_hot_probs(labels), np.arange(60))
    summary = summarize(resample_metrics(rows, resamples=100, seed=0), CLASSES)
    acc = summary[(summary["scope"] == "overall") & (summary["metric"] == "accuracy")].iloc[0]
    assert acc["mean"] == 1.0 and acc["se"] == 0.0 and acc["ci_low"] == acc["ci_high"] == 1.0
    assert set(summary["scope"]) == {"overall", *CLASSES}


def test_paired_difference_detects_a_better_model_and_not_a_tie():
    rng = np.random.default_rng(5)
    labels = rng.integers(0, 3, 500)
    lesions = np.arange(500) // 2
    good = np.where(rng.random(500) < 0.9, labels, (labels + 1) % 3)
    bad = np.where(rng.random(500) < 0.6, labels, (labels + 2) % 3)
    a = resample_metrics(table(labels, one_hot_probs(good), lesions), resamples=1000, seed=0,
                         names=("accuracy",))["accuracy"]
    b = resample_metrics(table(labels, one_hot_probs(bad), lesions), resamples=1000, seed=0,
                         names=("accuracy",))["accuracy"]
    better = paired_difference(a, b)
    assert better["ci_low"] > 0.2
    assert better["p_value"] == pytest.approx(2 / 1001)  # never crossed 0: the floor, not 0
    tie = paired_difference(a, a)
    assert tie["difference"] == 0 and tie["p_value"] == 1.0


def test_holm_against_a_hand_computed_case():
    # sorted: 0.01 x 4 = 0.04, 0.02 x 3 = 0.06, 0.03 x 2 = 0.06 (monotone), 0.04 x 1 = 0.04
    # -> raised to the running maximum 0.06
    p = np.array([0.03, 0.01, 0.04, 0.02])
    assert holm(p) == pytest.approx([0.06, 0.04, 0.06, 0.06])
    assert holm(np.array([0.5, 0.4, np.nan])) == pytest.approx([0.8, 0.8, np.nan], nan_ok=True)
    assert holm(np.array([0.9, 0.8])) == pytest.approx([1.0, 1.0])


def test_p_values_never_print_as_zero():
    assert format_p(0.0) == "< 0.001" and format_p(0.0004) == "< 0.001"
    assert format_p(0.0123) == "0.012" and format_p(float("nan")) == "–"


def test_confusion_under_weights_is_the_weighted_sum_of_images():
    labels, preds = np.array([0, 1, 2, 2]), np.array([0, 2, 2, 1])
    cm = confusion(labels, preds, 3, np.array([[2, 1, 0, 3]]))[0]
    assert cm.tolist() == [[2, 0, 0], [0, 0, 1], [0, 3, 0]]


def test_epoch_selection_scores_are_the_tables_point_values():
    """Training scores epochs with dermflow.evaluation.selection alone; its values must be
    what the evaluation table reports for the same names."""
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 3, 40)
    probs = rng.dirichlet(np.ones(3), 40)
    assert selection_scores(labels, probs) == point(labels, probs, tuple(SELECTION))
