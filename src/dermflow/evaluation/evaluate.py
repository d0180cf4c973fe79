"""evaluate: an experiment's test-set metrics with bootstrap intervals, and its figures.

Every experiment is bootstrapped with the same seed over its test rows sorted by
image id, so experiments that share a test set (all of them under ``grouped``)
share resamples too, and ``compare`` (dermflow.evaluation.compare) can difference
them pair by pair. Classes with fewer than ``report.min_lesions`` test lesions are
resampled in a shared stratum (dermflow.evaluation.bootstrap); evaluation.json names
them (``bootstrap.too_few_lesions``, and per class ``lesions`` and ``too_few_lesions``),
bootstrap.csv withholds their own intervals and marks them and every class average.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import (
    average_precision_score,
    confusion_matrix,
    precision_recall_curve,
    roc_auc_score,
    roc_curve,
)

from dermflow.atomic import write_csv, write_json
from dermflow.evaluation.bootstrap import (
    MIN_LESIONS,
    UNIT,
    clusters_of,
    lesion_counts,
    pooled_classes,
    resample_metrics,
    summarize,
    too_few,
)
from dermflow.evaluation.metrics import METRICS, evaluate
from dermflow.evaluation.predictions import classes_of, probabilities, test_rows
from dermflow.figures import plt, save

log = logging.getLogger(__name__)


def _panels(count: int, width: float, height: float) -> tuple[plt.Figure, list[plt.Axes]]:
    fig, axes = plt.subplots(1, count, figsize=(width * count, height), squeeze=False,
                             layout="constrained")
    return fig, list(axes[0])


def plot_curves(sets: dict[str, pd.DataFrame], experiment: str, out_roc: str,
                out_pr: str) -> None:
    """The paper's Fig. 9: one-vs-rest ROC and precision-recall curves of every class, one
    panel per prediction set (test, and external when there is one); each class's AUC or
    average precision and its count of positive images in the legend, since a curve's shape
    alone does not say how good or how well-supported it is."""
    for kind, out in (("roc", out_roc), ("pr", out_pr)):
        fig, axes = _panels(len(sets), 5.6, 4.0)
        for ax, (name, rows) in zip(axes, sets.items(), strict=True):
            labels, probs = rows["label"].to_numpy(), probabilities(rows)
            scores = []
            for c, dx in enumerate(classes_of(rows)):
                truth = labels == c
                if not 0 < truth.sum() < len(truth):
                    ax.plot([], [], label=f"{dx}: {truth.sum()} of {len(truth)} images, "
                                          "no curve")
                    continue
                if kind == "roc":
                    x, y, _ = roc_curve(truth, probs[:, c])
                    score = roc_auc_score(truth, probs[:, c])
                else:
                    y, x, _ = precision_recall_curve(truth, probs[:, c])
                    score = average_precision_score(truth, probs[:, c])
                scores.append(score)
                ax.plot(x, y, label=f"{dx}: {score:.3f} (n={truth.sum()})")
            metric = "AUC" if kind == "roc" else "AP"
            if kind == "roc":
                ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
                ax.set(xlabel="false positive rate", ylabel="true positive rate")
            else:
                ax.set(xlabel="recall", ylabel="precision")
            ax.set(xlim=(0, 1), ylim=(0, 1.02), aspect="equal",
                   title=f"{name} set, {len(rows)} images")
            mean = f"macro {metric} {np.mean(scores):.3f}" if scores else "no curves"
            ax.legend(title=f"{metric} per class ({mean})", fontsize=8, title_fontsize=8,
                      loc="upper left", bbox_to_anchor=(1.02, 1), frameon=False)
        curve = "ROC" if kind == "roc" else "precision-recall"
        fig.suptitle(f"{experiment}: one-vs-rest {curve} curves")
        save(fig, out)


def plot_confusion(sets: dict[str, pd.DataFrame], experiment: str, out_png: str) -> None:
    """The paper's Fig. 10: the confusion matrix of each prediction set (test, and external
    when there is one), shaded by the row-normalized share; each cell also shows its count of
    images, and each true class its total, so small classes' shares can be read as such."""
    fig, axes = _panels(len(sets), 5.6, 5.0)
    for ax, (name, rows) in zip(axes, sets.items(), strict=True):
        classes = classes_of(rows)
        counts = confusion_matrix(rows["label"], probabilities(rows).argmax(1),
                                  labels=range(len(classes)))
        shares = counts / np.maximum(counts.sum(1, keepdims=True), 1)
        image = ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
        for (i, j), share in np.ndenumerate(shares):
            ax.text(j, i, f"{share:.2f}\n{counts[i, j]}", ha="center", va="center",
                    fontsize=7 if len(classes) > 4 else 10, color="white" if share > 0.5 else
                    "black" if counts[i, j] else "grey")
        ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
        ax.set_yticks(range(len(classes)),
                      [f"{dx} ({n})" for dx, n in zip(classes, counts.sum(1), strict=True)])
        ax.set(xlabel="predicted class", ylabel="true class (images)",
               title=f"{name} set, {len(rows)} images")
        fig.colorbar(image, ax=ax, shrink=0.8, label="share of the true class")
    fig.suptitle(f"{experiment}: confusion matrix\n(each cell: share of its true class, then "
                 "its count of images)")
    save(fig, out_png)


def plot_bootstrap(values: dict[str, np.ndarray], title: str, out_png: str,
                   columns: int = 5) -> None:
    """Bootstrap distributions of the overall metrics, each with its 95% percentile
    interval, ``columns`` panels a row so that the labels stay readable; ``title`` names the
    experiment and the resampling."""
    names = [k for k, v in values.items() if v.ndim == 1 and (~np.isnan(v)).any()]
    rows = -(-len(names) // columns)
    width = min(columns, len(names))
    fig, axes = plt.subplots(rows, width, figsize=(2.6 * width, 2.3 * rows + 0.4),
                             squeeze=False, layout="constrained")
    for ax in axes.flat[len(names):]:
        ax.set_visible(False)
    for ax, name in zip(axes.flat, names, strict=False):
        # a metric constant over resamples (a one-class classifier's balanced accuracy
        # under the class-stratified bootstrap) may differ in its last bits, which
        # np.histogram cannot cut into 30 bins: round those differences away
        v = np.round(values[name][~np.isnan(values[name])], 12)
        low, high = np.percentile(v, [2.5, 97.5])
        ax.hist(v, bins=30, color="tab:blue")
        ax.axvline(low, color="grey", linestyle="--")
        ax.axvline(high, color="grey", linestyle="--")
        label = METRICS[name].label if name in METRICS else name.replace("_", " ")
        ax.set_title(f"{label}\n95% interval {low:.3f} to {high:.3f}", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.set_yticks([])
    fig.suptitle(title, fontsize=10)
    save(fig, out_png)


def scored(rows: pd.DataFrame, resamples: int, seed: int, min_lesions: int = MIN_LESIONS,
           ) -> tuple[dict[str, Any], pd.DataFrame, dict[str, np.ndarray]]:
    """Point metrics with the lesion-cluster bootstrap's overall summary, the full summary
    (per class too), and the resampled values; which classes have too few lesions."""
    classes = classes_of(rows)
    report = evaluate(rows["label"].to_numpy(), probabilities(rows), classes)
    lesions = lesion_counts(rows, classes)
    few = too_few(lesions, min_lesions)
    values = resample_metrics(rows, resamples=resamples, seed=seed, min_lesions=min_lesions)
    summary = summarize(values, classes, few)
    summary["lesions"] = summary["scope"].map({**lesions, "overall": sum(lesions.values())})
    for dx, entry in report["per_class"].items():
        entry.update(lesions=lesions[dx], too_few_lesions=dx in few)
    report["bootstrap"] = {"resamples": resamples, "seed": seed, "unit": UNIT,
                           "clusters": int(len(np.unique(clusters_of(rows)))),
                           "min_lesions": min_lesions, "too_few_lesions": few,
                           "pooled": pooled_classes(lesions, min_lesions),
                           "overall": summary[summary["scope"] == "overall"].set_index(
                               "metric")[["mean", "se", "ci_low", "ci_high", "too_few_lesions"]
                                         ].to_dict("index")}
    if few:
        log.warning("fewer than report.min_lesions=%d lesions in %s: their intervals are "
                    "withheld, class averages flagged", min_lesions, ", ".join(
                        f"{dx} ({lesions[dx]})" for dx in few))
    return report, summary, values


def run_summary(runs_csv: str) -> dict[str, Any]:
    """Each cross-validation run's validation scores, and their mean and SD over runs."""
    runs = pd.read_csv(runs_csv)
    names = [m for m in METRICS if m in runs]
    return {"runs": runs.to_dict("records"),
            "mean": {m: float(runs[m].mean()) for m in names},
            "sd": {m: float(runs[m].std(ddof=1)) if len(runs) > 1 else 0.0 for m in names}}


def evaluate_experiment(predictions_csv: str, *, experiment: str, resamples: int, seed: int,
                        out_json: str, out_bootstrap: str, out_roc: str, out_pr: str,
                        out_confusion: str, out_bootstrap_png: str,
                        runs_csv: str | None = None,
                        min_lesions: int = MIN_LESIONS) -> dict[str, Any]:
    """Point metrics, bootstrap summary and figures of one experiment's test predictions
    (and of the external test set's, when there are some); the figures' titles name
    ``experiment``. A cross-validated experiment
    (dermflow.evaluation.crossval) adds ``cv``: its out-of-fold predictions scored like a
    test set, and its runs' own validation scores with their mean and SD."""
    test = test_rows(predictions_csv)
    report, summary, values = scored(test, resamples, seed, min_lesions)
    parts = [summary.assign(split="test")]
    for split in ("external", "oof"):
        rows = test_rows(predictions_csv, split)
        if len(rows):
            found, part, _ = scored(rows, resamples, seed, min_lesions)
            parts.append(part.assign(split=split))
            if split == "external":
                report["external"] = found
            else:
                report["cv"] = {"oof": found, **run_summary(runs_csv)} if runs_csv else \
                    {"oof": found}
    summary = pd.concat(parts) if len(parts) > 1 else summary
    write_json(report, out_json)
    write_csv(summary, out_bootstrap)
    external = test_rows(predictions_csv, "external")
    shown = {"test": test, **({"external": external} if len(external) else {})}
    plot_curves(shown, experiment, out_roc, out_pr)
    plot_confusion(shown, experiment, out_confusion)
    plot_bootstrap(values, f"{experiment}, test set: {resamples} resamples of its "
                           f"{report['bootstrap']['clusters']} lesions", out_bootstrap_png)
    log.info("test n=%d accuracy %.4f balanced %.4f macro-F1 %.4f", report["n"],
             report["overall"]["accuracy"], report["overall"]["balanced_accuracy"],
             report["overall"]["macro_f1"])
    return report
