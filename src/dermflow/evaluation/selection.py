"""The metrics that pick a training epoch, and the confusion matrices they come from.

Every trainer (the baseline, the classifiers, the GAN stages through the shared loop)
scores each epoch's validation predictions with these. They sit apart from the full
table (dermflow.evaluation.metrics, which builds on them) so that adding or changing an
evaluation metric reruns evaluation and not training: a job's code hash covers the
modules it imports (dermflow.codehash). Only count-based metrics live here, so this
module needs numpy and nothing else.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import numpy as np


def confusion(labels: np.ndarray, preds: np.ndarray, k: int,
              weights: np.ndarray | None = None) -> np.ndarray:
    """Confusion matrices (rows true, columns predicted): K x K, or B x K x K for B x n
    image weights (resample counts)."""
    codes = labels * k + preds
    if weights is None:
        return np.bincount(codes, minlength=k * k).reshape(k, k).astype(float)
    onehot = np.zeros((len(codes), k * k))
    onehot[np.arange(len(codes)), codes] = 1.0
    return (np.asarray(weights, float) @ onehot).reshape(-1, k, k)


def per_class_from_counts(cm: np.ndarray) -> dict[str, np.ndarray]:
    """Per-class metrics from confusion matrices (... x K x K)."""
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
        f1 = np.where(2 * tp + fp + fn > 0, 2 * tp / (2 * tp + fp + fn), 0.0)
    return {"precision": precision, "recall": recall, "specificity": specificity, "f1": f1,
            "accuracy": (tp + tn) / total, "support": support}


def present_mean(values: np.ndarray, support: np.ndarray) -> np.ndarray:
    """Mean over the classes present in the truth (support > 0): a class absent from a
    validation set or a resample has no recall to average."""
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a resample without any class
        return np.nanmean(np.where(support > 0, values, np.nan), -1)


def accuracy(cm: np.ndarray) -> np.ndarray:
    """Share of images predicted right."""
    return np.trace(cm, axis1=-2, axis2=-1) / cm.sum((-2, -1))


def balanced_accuracy(cm: np.ndarray) -> np.ndarray:
    """Mean recall over the classes present, so rare lesion types weigh as much as nevi."""
    return present_mean(per_class_from_counts(cm)["recall"], cm.sum(-1))


def macro_f1(cm: np.ndarray) -> np.ndarray:
    """Mean F1 over all classes (a class never predicted scores 0): what picks the epoch."""
    return per_class_from_counts(cm)["f1"].mean(-1)


SELECTION: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "accuracy": accuracy, "balanced_accuracy": balanced_accuracy, "macro_f1": macro_f1}
# The history columns an epoch can be judged by (config keys monitor and select)
MONITORS = (*(f"val_{name}" for name in SELECTION), "val_loss")


def selection_scores(labels: np.ndarray, probs: np.ndarray) -> dict[str, float]:
    """The SELECTION metrics of a prediction set, every image weighing 1 (the same values
    as dermflow.evaluation.metrics.point gives for these names)."""
    cm = confusion(labels, probs.argmax(1), probs.shape[1])
    return {name: float(metric(cm)) for name, metric in SELECTION.items()}
