"""evaluate: an experiment's test-set metrics with bootstrap intervals, and its figures.

Every experiment is bootstrapped with the same seed over its test rows sorted by
image id, so experiments that share a test set (all of them under ``grouped``)
share resamples too, and ``compare`` (dermflow.evaluation.compare) can difference
them pair by pair.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import precision_recall_curve, roc_curve

from dermflow.atomic import write_csv, write_json
from dermflow.evaluation.bootstrap import UNIT, clusters_of, resample_metrics, summarize
from dermflow.evaluation.metrics import METRICS, evaluate
from dermflow.evaluation.predictions import classes_of, probabilities, test_rows
from dermflow.figures import plt, save

log = logging.getLogger(__name__)
def plot_curves(labels: np.ndarray, probs: np.ndarray, classes: list[str], out_roc: str,
                out_pr: str) -> None:
    """The paper's Fig. 9: one-vs-rest ROC and precision-recall curves for every class."""
    for kind, out in (("roc", out_roc), ("pr", out_pr)):
        fig, ax = plt.subplots(figsize=(5, 4.5))
        for c, dx in enumerate(classes):
            truth = labels == c
            if not 0 < truth.sum() < len(truth):
                continue
            if kind == "roc":
                x, y, _ = roc_curve(truth, probs[:, c])
            else:
                y, x, _ = precision_recall_curve(truth, probs[:, c])
            ax.plot(x, y, label=dx)
        if kind == "roc":
            ax.plot([0, 1], [0, 1], color="grey", linestyle=":")
            ax.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC")
        else:
            ax.set(xlabel="recall", ylabel="precision", title="precision-recall")
        ax.legend(fontsize=8)
        save(fig, out)


def plot_confusion(matrix: list[list[float]], classes: list[str], out_png: str) -> None:
    """The paper's Fig. 10: the row-normalized confusion matrix."""
    cm = np.asarray(matrix)
    fig, ax = plt.subplots(figsize=(5, 4.5))
    ax.imshow(cm, cmap="Blues", vmin=0, vmax=1)
    for (i, j), v in np.ndenumerate(cm):
        ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=7,
                color="white" if v > 0.5 else "black")
    ax.set_xticks(range(len(classes)), classes)
    ax.set_yticks(range(len(classes)), classes)
    ax.set(xlabel="predicted", ylabel="true")
    save(fig, out_png)


def plot_bootstrap(values: dict[str, np.ndarray], out_png: str) -> None:
    """Bootstrap distributions of the overall metrics."""
    names = [k for k, v in values.items() if v.ndim == 1 and (~np.isnan(v)).any()]
    fig, axes = plt.subplots(1, len(names), figsize=(2.6 * len(names), 2.6), squeeze=False)
    for ax, name in zip(axes[0], names, strict=True):
        # a metric constant over resamples (a one-class classifier's balanced accuracy
        # under the class-stratified bootstrap) may differ in its last bits, which
        # np.histogram cannot cut into 30 bins: round those differences away
        v = np.round(values[name][~np.isnan(values[name])], 12)
        ax.hist(v, bins=30, color="tab:blue")
        ax.axvline(np.percentile(v, 2.5), color="grey", linestyle="--")
        ax.axvline(np.percentile(v, 97.5), color="grey", linestyle="--")
        ax.set_title(name.replace("_", " "), fontsize=8)
    save(fig, out_png)


def scored(rows: pd.DataFrame, resamples: int, seed: int,
           ) -> tuple[dict[str, Any], pd.DataFrame, dict[str, np.ndarray]]:
    """Point metrics with the lesion-cluster bootstrap's overall summary, the full summary
    (per class too), and the resampled values."""
    classes = classes_of(rows)
    report = evaluate(rows["label"].to_numpy(), probabilities(rows), classes)
    values = resample_metrics(rows, resamples=resamples, seed=seed)
    summary = summarize(values, classes)
    report["bootstrap"] = {"resamples": resamples, "seed": seed, "unit": UNIT,
                           "clusters": int(len(np.unique(clusters_of(rows)))),
                           "overall": summary[summary["scope"] == "overall"].set_index(
                               "metric")[["mean", "se", "ci_low", "ci_high"]].to_dict("index")}
    return report, summary, values


def run_summary(runs_csv: str) -> dict[str, Any]:
    """Each cross-validation run's validation scores, and their mean and SD over runs."""
    runs = pd.read_csv(runs_csv)
    names = [m for m in METRICS if m in runs]
    return {"runs": runs.to_dict("records"),
            "mean": {m: float(runs[m].mean()) for m in names},
            "sd": {m: float(runs[m].std(ddof=1)) if len(runs) > 1 else 0.0 for m in names}}


def evaluate_experiment(predictions_csv: str, *, resamples: int, seed: int, out_json: str,
                        out_bootstrap: str, out_roc: str, out_pr: str, out_confusion: str,
                        out_bootstrap_png: str, runs_csv: str | None = None) -> dict[str, Any]:
    """Point metrics, bootstrap summary and figures of one experiment's test predictions
    (and of the external test set's, when there are some). A cross-validated experiment
    (dermflow.evaluation.crossval) adds ``cv``: its out-of-fold predictions scored like a
    test set, and its runs' own validation scores with their mean and SD."""
    test = test_rows(predictions_csv)
    report, summary, values = scored(test, resamples, seed)
    parts = [summary.assign(split="test")]
    for split in ("external", "oof"):
        rows = test_rows(predictions_csv, split)
        if len(rows):
            found, part, _ = scored(rows, resamples, seed)
            parts.append(part.assign(split=split))
            if split == "external":
                report["external"] = found
            else:
                report["cv"] = {"oof": found, **run_summary(runs_csv)} if runs_csv else \
                    {"oof": found}
    summary = pd.concat(parts) if len(parts) > 1 else summary
    write_json(report, out_json)
    write_csv(summary, out_bootstrap)
    classes = classes_of(test)
    plot_curves(test["label"].to_numpy(), probabilities(test), classes, out_roc, out_pr)
    plot_confusion(report["confusion_matrix_normalized"], classes, out_confusion)
    plot_bootstrap(values, out_bootstrap_png)
    log.info("test n=%d accuracy %.4f balanced %.4f macro-F1 %.4f", report["n"],
             report["overall"]["accuracy"], report["overall"]["balanced_accuracy"],
             report["overall"]["macro_f1"])
    return report
