"""Paired differences, their p-values, and the correction for testing several at once.

Paired bootstrap difference: both experiments are scored on the same B lesion-cluster
resamples of the same test images (dermflow.evaluation.bootstrap), and the B differences
a - b give the estimate (their mean), a 95% percentile interval, and a two-sided p-value
by inverting the interval: p = 2 min(#{d <= 0}, #{d >= 0}) counted with the add-one rule
(1 + count) / (1 + B), so a difference never crossing 0 in B resamples reports p of
about 2 / B, never 0. Assumes the pairing captures the dependence between the two
experiments (same images, same lesions) and that the resamples' spread stands for the
test set's sampling variation; it does not count training randomness (seeds, splits):
cross-validation does.

Holm's step-down correction controls the family-wise error rate across every declared
test without assuming independence between them.
"""

from __future__ import annotations

import numpy as np


def paired_difference(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    """Bootstrap difference a - b over the same resamples: mean, 95% CI, two-sided p-value."""
    diff = np.asarray(a, float) - np.asarray(b, float)
    diff = diff[~np.isnan(diff)]
    if not len(diff):
        return {"difference": float("nan"), "ci_low": float("nan"), "ci_high": float("nan"),
                "p_value": float("nan")}
    if np.all(diff == 0):
        p = 1.0
    else:
        tail = min((diff <= 0).sum(), (diff >= 0).sum())
        p = min(1.0, 2 * (1 + tail) / (1 + len(diff)))
    return {"difference": float(diff.mean()), "ci_low": float(np.percentile(diff, 2.5)),
            "ci_high": float(np.percentile(diff, 97.5)), "p_value": float(p)}


def holm(p_values: np.ndarray) -> np.ndarray:
    """Holm-adjusted p-values (same order): the i-th smallest is multiplied by m - i + 1,
    kept monotone and capped at 1. NaN entries are left out of the family."""
    p = np.asarray(p_values, float)
    out = np.full_like(p, np.nan)
    valid = np.flatnonzero(~np.isnan(p))
    order = valid[np.argsort(p[valid], kind="stable")]
    m = len(order)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        out[i] = running
    return out


def format_p(p: float | None) -> str:
    """A p-value for a table: '< 0.001' below a thousandth, never '0.000'."""
    if p is None or np.isnan(p):
        return "–"
    return "< 0.001" if p < 0.001 else f"{p:.3f}"
