"""The lesion-cluster bootstrap: intervals that count lesions, not images, as the unit.

HAM10000 has 1-6 images per lesion, and images of one lesion are not independent (a
model that gets one right tends to get its siblings right), so resampling images makes
intervals too narrow. Estimator: draw B resamples of the test set's lesions with
replacement (seeded), stratified by class: each class's G_c lesions are drawn G_c
times from that class, each lesion bringing all its images (a lesion has one
diagnosis). Recompute every metric on each resample; report the mean, the standard
deviation (the bootstrap standard error) and the 2.5th and 97.5th percentiles (95%
percentile interval). Stratifying keeps every class in every resample with its lesion
count, as the test set was drawn: without it, a resample missing a rare class would
average balanced accuracy over fewer classes and shift the interval off the estimate.
An image whose lesion is unknown (an external image without lesion id) is its own
cluster, so the image-level bootstrap is the special case of one image per cluster.

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


def cluster_weights(clusters: np.ndarray, resamples: int, seed: int,
                    strata: np.ndarray | None = None) -> np.ndarray:
    """B x n resample weights: how many times each image's cluster was drawn, clusters drawn
    within their stratum (an image's class; one stratum when ``strata`` is None)."""
    inverse, codes = pd.factorize(pd.Series(np.asarray(clusters).astype(str)), sort=True)
    g = len(codes)
    stratum = np.zeros(g, int)
    if strata is not None:
        stratum[inverse] = pd.factorize(pd.Series(np.asarray(strata)), sort=True)[0]
    rng = np.random.default_rng(seed)
    counts = np.zeros((resamples, g))
    for s in np.unique(stratum):
        members = np.flatnonzero(stratum == s)
        draws = members[rng.integers(0, len(members), size=(resamples, len(members)))]
        np.add.at(counts, (np.arange(resamples)[:, None], draws), 1)
    return counts[:, inverse]


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
    weights = cluster_weights(clusters_of(rows), resamples, seed, rows["label"].to_numpy())
    return metric_values(rows["label"].to_numpy(), probabilities(rows), weights, names)
