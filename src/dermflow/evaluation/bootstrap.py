"""The lesion-cluster bootstrap: intervals that count lesions, not images, as the unit.

HAM10000 has 1-6 images per lesion, and images of one lesion are not independent (a
model that gets one right tends to get its siblings right), so resampling images makes
intervals too narrow. Estimator: draw B resamples of the test set's G lesions with
replacement (seeded), each lesion bringing all its images; recompute every metric on
each resample; report the mean, the standard deviation (the bootstrap standard error)
and the 2.5th and 97.5th percentiles (95% percentile interval). An image whose lesion
is unknown (an external image without lesion id) is its own cluster, so the image-level
bootstrap is the special case of one image per cluster.

Assumptions: lesions are independent and exchangeable draws from the population the
test set represents; the metric is a smooth enough function of the per-lesion counts
for the percentile interval (at a few hundred lesions per class it is; for rare classes
with a handful of lesions the per-class intervals are rough). Resample b weighs each
image by the number of times its lesion was drawn, so all B resamples of every metric
are one matrix product (dermflow.evaluation.metrics). Given the same seed and the same
rows in the same order (image id order), every experiment gets the same resamples, so
differences between experiments are paired.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from dermflow.evaluation.metrics import metric_values
from dermflow.evaluation.predictions import probabilities

UNIT = "lesion"


def cluster_weights(clusters: np.ndarray, resamples: int, seed: int) -> np.ndarray:
    """B x n resample weights: how many times each image's cluster was drawn."""
    inverse, codes = pd.factorize(pd.Series(np.asarray(clusters).astype(str)), sort=True)
    g = len(codes)
    draws = np.random.default_rng(seed).integers(0, g, size=(resamples, g))
    counts = np.bincount((np.arange(resamples)[:, None] * g + draws).ravel(),
                         minlength=resamples * g).reshape(resamples, g)
    return counts[:, inverse].astype(float)


def clusters_of(rows: pd.DataFrame) -> np.ndarray:
    """Each row's resampling unit: its lesion, or the image itself where no lesion id is known."""
    if "lesion_id" not in rows:
        return rows["image_id"].to_numpy()
    lesion = rows["lesion_id"].astype(object)
    known = lesion.notna() & (lesion.astype(str).str.len() > 0)
    return np.where(known, lesion.astype(str), "image:" + rows["image_id"].astype(str))


def summarize(values: dict[str, np.ndarray], classes: list[str]) -> pd.DataFrame:
    """Mean, SD (= the bootstrap SE) and 95% percentile interval per metric (and class)."""
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
            sd = float(v.std(ddof=1)) if len(v) > 1 else 0.0
            rows.append({"scope": scope, "metric": metric, "mean": float(v.mean()),
                         "std": sd, "se": sd, "ci_low": float(np.percentile(v, 2.5)),
                         "ci_high": float(np.percentile(v, 97.5)), "resamples": len(v),
                         "unit": UNIT})
    return pd.DataFrame(rows)


def resample_metrics(rows: pd.DataFrame, *, resamples: int, seed: int,
                     names: tuple[str, ...] | None = None) -> dict[str, np.ndarray]:
    """Every (or the named) metric of a prediction table on B lesion-cluster resamples."""
    weights = cluster_weights(clusters_of(rows), resamples, seed)
    return metric_values(rows["label"].to_numpy(), probabilities(rows), weights, names)
