"""Classification metrics, in one table (METRICS) that evaluation, the bootstrap, comparisons
and the report read. The few that pick a training epoch, and the confusion matrices all
count-based metrics come from, live in dermflow.evaluation.selection, so an edit here
reruns evaluation and not training.

Every metric is computed under image weights: a point estimate weighs every image 1, a
bootstrap resample weighs each image by how many times its lesion was drawn
(dermflow.evaluation.bootstrap), so one function serves both and B resamples are one
matrix product. Count-based metrics (accuracy, balanced accuracy, macro/weighted
precision, recall, F1) come from weighted confusion matrices; score-based ones (macro ROC
AUC, calibration error) from the probabilities. Macro averages run over the classes
present in the truth for recall and over all classes for precision and F1 (a class never
predicted has precision 0, as scikit-learn's ``zero_division=0``).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score

from dermflow.evaluation.selection import (
    accuracy,
    balanced_accuracy,
    confusion,
    macro_f1,
    per_class_from_counts,
)

PER_CLASS = ("precision", "recall", "specificity", "f1", "accuracy")
ECE_BINS = 15


def _weighted(name: str) -> Callable[[np.ndarray], np.ndarray]:
    def average(cm: np.ndarray) -> np.ndarray:
        per = per_class_from_counts(cm)
        weights = per["support"] / per["support"].sum(-1, keepdims=True)
        return np.nansum(per[name] * weights, -1)
    return average


def weighted_auc(truth: np.ndarray, scores: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """ROC AUC of binary ``truth`` under each row of image weights (B x n): the weighted
    share of (positive, negative) pairs ranked correctly, ties counting half. NaN where a
    row weighs no positive or no negative."""
    order = np.argsort(scores, kind="stable")
    truth, scores = truth[order], scores[order]
    w = np.asarray(weights, float)[:, order]
    new = np.r_[True, scores[1:] != scores[:-1]]
    start = np.maximum.accumulate(np.where(new, np.arange(len(scores)), 0))  # of each tie group
    end = np.r_[np.flatnonzero(new)[1:], len(scores)][np.cumsum(new) - 1]  # one past its end
    cum = np.zeros((w.shape[0], len(scores) + 1))
    np.cumsum(np.where(truth, 0.0, w), axis=1, out=cum[:, 1:])  # negative weight so far
    below, upto = cum[:, start[truth]], cum[:, end[truth]]
    pos = w[:, truth]
    with np.errstate(invalid="ignore", divide="ignore"):
        return (pos * (0.5 * (below + upto))).sum(1) / (pos.sum(1) * cum[:, -1])


def macro_auc(labels: np.ndarray, probs: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Mean one-vs-rest ROC AUC over the classes with both positives and negatives."""
    aucs = np.stack([weighted_auc(labels == c, probs[:, c], weights)
                     for c in range(probs.shape[1])], axis=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(aucs, axis=1)


def calibration_error(labels: np.ndarray, probs: np.ndarray, weights: np.ndarray,
                      bins: int = ECE_BINS) -> np.ndarray:
    """Top-label ECE: |accuracy - confidence| per confidence bin, weighted by bin size."""
    confidence = probs.max(1)
    gap = (probs.argmax(1) == labels) - confidence
    which = np.clip(np.digitize(confidence, np.linspace(0, 1, bins + 1)[1:-1]), 0, bins - 1)
    per_image = np.zeros((len(gap), bins))
    per_image[np.arange(len(gap)), which] = gap
    w = np.asarray(weights, float)
    return np.abs(w @ per_image).sum(1) / w.sum(1)


@dataclass(frozen=True)
class Metric:
    """One overall metric. Exactly one of ``counts`` (confusion matrices ... x K x K →
    values) and ``scores`` ((labels, probabilities, B x n weights) → B values) is set.
    ``headline``: in the report's first table and the declared comparisons.
    ``class_average``: an unweighted mean over classes, so a class with a single test
    lesion weighs as much as one with hundreds (dermflow.evaluation.bootstrap flags it
    when a class has too few lesions to vary)."""

    label: str
    counts: Callable[[np.ndarray], np.ndarray] | None = None
    scores: Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray] | None = None
    headline: bool = False
    class_average: bool = False


METRICS: dict[str, Metric] = {
    "accuracy": Metric("accuracy", counts=accuracy),
    "balanced_accuracy": Metric("balanced accuracy", headline=True, class_average=True,
                                counts=balanced_accuracy),
    "macro_precision": Metric("macro precision", class_average=True,
                              counts=lambda cm: per_class_from_counts(cm)["precision"].mean(-1)),
    # recall averaged over the classes present is balanced accuracy by definition
    "macro_recall": Metric("macro recall", class_average=True, counts=balanced_accuracy),
    "macro_f1": Metric("macro F1", headline=True, class_average=True, counts=macro_f1),
    "weighted_precision": Metric("weighted precision", counts=_weighted("precision")),
    "weighted_recall": Metric("weighted recall", counts=_weighted("recall")),
    "weighted_f1": Metric("weighted F1", counts=_weighted("f1")),
    "macro_roc_auc": Metric("macro ROC AUC", scores=macro_auc, headline=True,
                            class_average=True),
    "ece": Metric("expected calibration error", scores=calibration_error),
}
HEADLINE = tuple(name for name, m in METRICS.items() if m.headline)


def metric_values(labels: np.ndarray, probs: np.ndarray, weights: np.ndarray,
                  names: tuple[str, ...] | None = None) -> dict[str, np.ndarray]:
    """Every (or the named) overall metric under each row of image weights (B x n): B values
    each, plus ``class_<m>`` (B x K) for the per-class count metrics when all are asked for."""
    k = probs.shape[1]
    chosen = names or tuple(METRICS)
    cm = confusion(labels, probs.argmax(1), k, weights)
    out: dict[str, np.ndarray] = {}
    if names is None:
        per = per_class_from_counts(cm)
        out.update({f"class_{m}": per[m] for m in PER_CLASS})
    for name in chosen:
        metric = METRICS[name]
        out[name] = (metric.counts(cm) if metric.counts is not None
                     else metric.scores(labels, probs, weights))
    return out


def point(labels: np.ndarray, probs: np.ndarray, names: tuple[str, ...] | None = None,
          ) -> dict[str, float]:
    """Overall metrics of a prediction set, every image weighing 1."""
    ones = np.ones((1, len(labels)))
    values = metric_values(labels, probs, ones, names or tuple(METRICS))
    return {name: float(v[0]) for name, v in values.items()}


def _finite(value: float) -> float | None:
    """A JSON-safe number: None where it is undefined (no such class, say)."""
    return None if np.isnan(value) else float(value)


def evaluate(labels: np.ndarray, probs: np.ndarray, classes: list[str]) -> dict[str, Any]:
    """Point metrics: per class, overall (METRICS), confusion matrices, per-class AUC/AP."""
    k = len(classes)
    cm = confusion(labels, probs.argmax(1), k).astype(int)
    per = per_class_from_counts(cm)
    onehot = np.eye(k)[labels]
    per_class: dict[str, dict[str, float | None]] = {}
    for c, dx in enumerate(classes):
        both = 0 < onehot[:, c].sum() < len(labels)
        per_class[dx] = {
            **{m: _finite(per[m][c]) for m in PER_CLASS}, "support": int(per["support"][c]),
            "roc_auc": float(roc_auc_score(onehot[:, c], probs[:, c])) if both else None,
            "average_precision": float(average_precision_score(onehot[:, c], probs[:, c]))
            if both else None}
    overall = point(labels, probs)
    return {
        "n": int(len(labels)),
        "per_class": per_class,
        "overall": {name: _finite(v) for name, v in overall.items()},
        "confusion_matrix": cm.tolist(),
        "confusion_matrix_normalized": (cm / np.maximum(cm.sum(1, keepdims=True), 1)).round(
            4).tolist(),
    }
