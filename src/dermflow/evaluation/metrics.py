"""Classification metrics of a prediction table, and their bootstrap.

Point estimates come from scikit-learn. The bootstrap resamples the test set B
times (seeded) and recomputes every count-based metric at once from per-resample
confusion matrices (one bincount for all B), so 1000 resamples of a few thousand
predictions take milliseconds. Intervals are 95% percentile intervals; the
standard error is the bootstrap standard deviation (the paper's Table 7 "SE").
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import (
    average_precision_score,
    balanced_accuracy_score,
    confusion_matrix,
    precision_recall_fscore_support,
    roc_auc_score,
)

PER_CLASS = ("precision", "recall", "specificity", "f1", "accuracy")


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, bins: int = 15) -> float:
    """Top-label ECE: |accuracy - confidence| per confidence bin, weighted by bin size."""
    confidence = probs.max(1)
    correct = probs.argmax(1) == labels
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1]), 0, bins - 1)
    ece = 0.0
    for b in range(bins):
        mask = which == b
        if mask.any():
            ece += mask.mean() * abs(correct[mask].mean() - confidence[mask].mean())
    return float(ece)


def _per_class_from_counts(cm: np.ndarray) -> dict[str, np.ndarray]:
    """Per-class metrics from confusion matrices (... x K x K, rows true, columns predicted)."""
    tp = np.diagonal(cm, axis1=-2, axis2=-1).astype(float)
    support = cm.sum(-1).astype(float)
    predicted = cm.sum(-2).astype(float)
    total = cm.sum((-2, -1))[..., None].astype(float)
    fp, fn = predicted - tp, support - tp
    tn = total - tp - fp - fn
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(predicted > 0, tp / predicted, 0.0)
        recall = np.where(support > 0, tp / support, np.nan)
        specificity = np.where(tn + fp > 0, tn / (tn + fp), np.nan)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    return {"precision": precision, "recall": recall, "specificity": specificity, "f1": f1,
            "accuracy": (tp + tn) / total, "support": support}


def _overall_from_counts(cm: np.ndarray) -> dict[str, np.ndarray]:
    per = _per_class_from_counts(cm)
    present = per["support"] > 0
    weights = per["support"] / per["support"].sum(-1, keepdims=True)
    with np.errstate(invalid="ignore"):
        return {
            "accuracy": np.diagonal(cm, axis1=-2, axis2=-1).sum(-1) / cm.sum((-2, -1)),
            "balanced_accuracy": np.nanmean(np.where(present, per["recall"], np.nan), -1),
            "macro_precision": per["precision"].mean(-1),
            "macro_recall": np.nanmean(np.where(present, per["recall"], np.nan), -1),
            "macro_f1": per["f1"].mean(-1),
            "weighted_f1": (per["f1"] * weights).sum(-1),
        }


def confusion_batches(labels: np.ndarray, preds: np.ndarray, k: int,
                      samples: np.ndarray | None = None) -> np.ndarray:
    """Confusion matrices: one (K x K) or, with samples (B x n indices), B x K x K."""
    if samples is None:
        return np.bincount(labels * k + preds, minlength=k * k).reshape(k, k)
    b = samples.shape[0]
    codes = (np.arange(b)[:, None] * k * k + labels[samples] * k + preds[samples]).ravel()
    return np.bincount(codes, minlength=b * k * k).reshape(b, k, k)


def evaluate(labels: np.ndarray, probs: np.ndarray, classes: list[str]) -> dict[str, Any]:
    """Point metrics: per class, overall, normalized confusion matrix, AUCs and ECE."""
    k = len(classes)
    preds = probs.argmax(1)
    precision, recall, f1, support = precision_recall_fscore_support(
        labels, preds, labels=range(k), zero_division=0)
    cm = confusion_matrix(labels, preds, labels=range(k))
    per = _per_class_from_counts(cm)
    onehot = np.eye(k)[labels]
    per_class: dict[str, dict[str, float | None]] = {}
    for c, dx in enumerate(classes):
        both = 0 < onehot[:, c].sum() < len(labels)
        per_class[dx] = {
            "precision": float(precision[c]), "recall": float(recall[c]),
            "specificity": float(per["specificity"][c]), "f1": float(f1[c]),
            "support": int(support[c]), "accuracy": float(per["accuracy"][c]),
            "roc_auc": float(roc_auc_score(onehot[:, c], probs[:, c])) if both else None,
            "average_precision": float(average_precision_score(onehot[:, c], probs[:, c]))
            if both else None}
    aucs = [v["roc_auc"] for v in per_class.values() if v["roc_auc"] is not None]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        balanced = float(balanced_accuracy_score(labels, preds))
    return {
        "n": int(len(labels)),
        "per_class": per_class,
        "overall": {
            "accuracy": float((preds == labels).mean()), "balanced_accuracy": balanced,
            "macro_precision": float(precision.mean()), "macro_recall": float(recall.mean()),
            "macro_f1": float(f1.mean()),
            "weighted_precision": float(np.average(precision, weights=support)),
            "weighted_recall": float(np.average(recall, weights=support)),
            "weighted_f1": float(np.average(f1, weights=support)),
            "macro_roc_auc": float(np.mean(aucs)) if aucs else None,
            "ece": expected_calibration_error(probs, labels)},
        "confusion_matrix": cm.tolist(),
        "confusion_matrix_normalized": (cm / np.maximum(cm.sum(1, keepdims=True), 1)).round(
            4).tolist(),
    }


def bootstrap_samples(n: int, resamples: int, seed: int) -> np.ndarray:
    """B x n resample indices (with replacement), the same for every experiment given a seed."""
    return np.random.default_rng(seed).integers(0, n, size=(resamples, n))


def bootstrap(labels: np.ndarray, preds: np.ndarray, classes: list[str],
              samples: np.ndarray) -> dict[str, np.ndarray]:
    """Every count-based metric for every resample: name → B (overall) or B x K (per class)."""
    cm = confusion_batches(labels, preds, len(classes), samples)
    per = _per_class_from_counts(cm)
    return {**{f"class_{m}": per[m] for m in PER_CLASS}, **_overall_from_counts(cm)}


def summarize_bootstrap(values: dict[str, np.ndarray], classes: list[str]) -> pd.DataFrame:
    """Mean, std, SE (= bootstrap std) and 95% percentile interval per metric and class."""
    rows = []
    for name, array in values.items():
        if array.ndim == 1:
            columns = [("overall", name, array)]
        else:
            columns = [(dx, name.removeprefix("class_"), array[:, c])
                       for c, dx in enumerate(classes)]
        for scope, metric, v in columns:
            v = v[~np.isnan(v)]
            if not len(v):
                continue
            rows.append({"scope": scope, "metric": metric, "mean": float(v.mean()),
                         "std": float(v.std(ddof=1)), "se": float(v.std(ddof=1)),
                         "ci_low": float(np.percentile(v, 2.5)),
                         "ci_high": float(np.percentile(v, 97.5)), "resamples": len(v)})
    return pd.DataFrame(rows)


def paired_difference(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    """Bootstrap difference a - b over the same resamples: mean, 95% CI, two-sided p-value."""
    diff = a - b
    p = 2 * min((diff <= 0).mean(), (diff >= 0).mean())
    return {"difference": float(diff.mean()), "ci_low": float(np.percentile(diff, 2.5)),
            "ci_high": float(np.percentile(diff, 97.5)), "p_value": float(min(1.0, p))}
