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

Small strata (collapsed strata, as survey sampling does for strata of one unit): a class
with one test lesion would be drawn the same every time, its share of every metric fixed,
and intervals over it would collapse to a point. So classes with fewer than
``min_lesions`` lesions are pooled into one shared stratum, drawn as many times as it
holds lesions; a pool still smaller than ``min_lesions`` takes in the smallest other
classes until it is not (or until it is the whole test set: the unstratified bootstrap).
In the pool a class's lesion count varies and can be 0 in a resample (a class average
then runs over the classes present). What pooling cannot give is the spread of a pooled
class's own metrics, or of a mean over classes that weighs each of them as much as a
large one: those per-class intervals are withheld, the class averages flagged
(``too_few_lesions``), and compare (dermflow.evaluation.compare) never counts such a
difference as holding. Why 5 by default: with G lesions a class's bootstrap variance
is (G - 1) / G of the unbiased one (80% at 5), and a resample draws the same lesion all
G times in 1 of 625 at 5 (1 in 9 at 3), far rarer than the 2.5% tail; in simulated splits
of 12, 2, 2, 2, 2, 1 and 1 lesions accuracy's interval covered 86% when only one-lesion
classes were pooled and 90% when those below 5 were (tests/test_bootstrap.py).

Assumptions: lesions are independent and exchangeable draws from the population the
test set represents (within their class, or within the pool); the metric is a smooth
enough function of the per-lesion counts for the percentile interval (at a few hundred
lesions per class it is). Resample b weighs each image by the number of times its lesion
was drawn, so all B resamples of every metric are one matrix product
(dermflow.evaluation.metrics). Given the same seed and the same rows in the same order
(image id order), every experiment gets the same resamples, so differences between
experiments are paired.
"""

from __future__ import annotations

from collections.abc import Collection

import numpy as np
import pandas as pd

from dermflow.evaluation.metrics import METRICS, metric_values
from dermflow.evaluation.predictions import probabilities

UNIT = "lesion"
MIN_LESIONS = 5  # report.min_lesions' default (workflow/schemas/config.schema.yaml)


def resampling_strata(sizes: np.ndarray, min_clusters: int) -> np.ndarray:
    """The stratum each stratum is drawn in: itself when it holds at least ``min_clusters``
    clusters; else one shared pool of every smaller stratum, which takes in the smallest
    other strata (the first of equal ones) while it holds fewer than ``min_clusters``."""
    sizes = np.asarray(sizes)
    target = np.arange(len(sizes))
    pooled = sizes < min_clusters
    if not pooled.any():
        return target
    for s in np.argsort(sizes, kind="stable"):
        if sizes[pooled].sum() >= min_clusters:
            break
        pooled[s] = True
    target[pooled] = np.flatnonzero(pooled)[0]
    return target


def cluster_weights(clusters: np.ndarray, resamples: int, seed: int,
                    strata: np.ndarray | None = None, min_clusters: int = 1) -> np.ndarray:
    """B x n resample weights: how many times each image's cluster was drawn, clusters drawn
    within their stratum (an image's class; one stratum when ``strata`` is None), strata of
    fewer than ``min_clusters`` clusters pooled (resampling_strata)."""
    inverse, codes = pd.factorize(pd.Series(np.asarray(clusters).astype(str)), sort=True)
    g = len(codes)
    stratum = np.zeros(g, int)
    if strata is not None:
        stratum[inverse] = pd.factorize(pd.Series(np.asarray(strata)), sort=True)[0]
    stratum = resampling_strata(np.bincount(stratum), min_clusters)[stratum]
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


def lesion_counts(rows: pd.DataFrame, classes: list[str]) -> dict[str, int]:
    """Each class's number of resampling units (lesions) in a prediction table."""
    per = pd.Series(clusters_of(rows)).groupby(rows["label"].to_numpy()).nunique()
    return {dx: int(per.get(c, 0)) for c, dx in enumerate(classes)}


def too_few(lesions: dict[str, int], min_lesions: int) -> list[str]:
    """The classes whose lesions are too few to vary on their own (none in the set included)."""
    return [dx for dx, n in lesions.items() if n < min_lesions]


def pooled_classes(lesions: dict[str, int], min_lesions: int) -> list[str]:
    """The classes drawn in the shared stratum (those of the test set only)."""
    present = [dx for dx, n in lesions.items() if n]
    target = resampling_strata(np.array([lesions[dx] for dx in present]), min_lesions)
    shared = np.bincount(target, minlength=len(target)) > 1
    return [dx for dx, t in zip(present, target, strict=True) if shared[t]]


def summarize(values: dict[str, np.ndarray], classes: list[str],
              few: Collection[str] = ()) -> pd.DataFrame:
    """Mean, SD (= the bootstrap SE) and 95% percentile interval per metric (and class).
    ``few``: classes with too few lesions: their own SE and interval are withheld (NaN),
    and they and every class average are marked ``too_few_lesions``."""
    rows = []
    for name, array in values.items():
        if array.ndim == 1:
            columns = [("overall", name, array, bool(few) and METRICS[name].class_average)]
        else:
            columns = [(dx, name.removeprefix("class_"), array[:, c], dx in few)
                       for c, dx in enumerate(classes)]
        for scope, metric, v, flagged in columns:
            v = v[~np.isnan(v)]
            if not len(v):
                continue
            sd = float(v.std(ddof=1)) if len(v) > 1 else 0.0
            spread = {"std": sd, "se": sd, "ci_low": float(np.percentile(v, 2.5)),
                      "ci_high": float(np.percentile(v, 97.5))}
            if flagged and scope != "overall":
                spread = dict.fromkeys(spread, float("nan"))
            rows.append({"scope": scope, "metric": metric, "mean": float(v.mean()), **spread,
                         "resamples": len(v), "unit": UNIT, "too_few_lesions": flagged})
    return pd.DataFrame(rows)


def resample_metrics(rows: pd.DataFrame, *, resamples: int, seed: int,
                     names: tuple[str, ...] | None = None,
                     min_lesions: int = MIN_LESIONS) -> dict[str, np.ndarray]:
    """Every (or the named) metric of a prediction table on B lesion-cluster resamples."""
    weights = cluster_weights(clusters_of(rows), resamples, seed, rows["label"].to_numpy(),
                              min_lesions)
    return metric_values(rows["label"].to_numpy(), probabilities(rows), weights, names)
