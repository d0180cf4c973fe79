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

Corrected resampled t-test (Nadeau & Bengio 2003), for cross-validation: run j (a fold
and a seed) gives the difference d_j of the two experiments' scores on its validation
fold. The J differences are not independent (their training sets overlap), so the
naive variance s^2 / J is replaced by (1 / J + n_val / n_train) s^2; t = mean(d) /
sqrt(that), with J - 1 degrees of freedom, gives the interval and the two-sided p.
It counts the training randomness that the bootstrap above leaves out; it assumes the
runs' differences are roughly normal and that n_val / n_train is the same for every run
(K-fold: about 1 / (K - 1)). n_train counts real training images only: the correction is
for the overlap of the runs' training data, and synthetic, augmented or repeated images
are derived from that data, so counting them would shrink the correction (for a C'GAN
set that doubles the training rows, from 1/2 to about 1/4 at K = 3) and make the
interval too narrow.

Holm's step-down correction controls the family-wise error rate across every declared
test without assuming independence between them. A declared row that is no test (not
paired, or a class average on a set with too few lesions in some class: its bootstrap
spread misses those classes' own variation) is left out of the family, not counted as
failing, so it neither holds nor makes the others' correction harsher.
"""

from __future__ import annotations

import numpy as np
from scipy import stats


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


def corrected_t_test(differences: np.ndarray, n_val: float, n_train: float,
                     ) -> dict[str, float]:
    """Nadeau-Bengio corrected resampled t-test of per-run differences: mean, 95% CI, p, and
    the share of runs where the first experiment scored higher (ties count half)."""
    d = np.asarray(differences, float)
    d = d[~np.isnan(d)]
    share = float(((d > 0) + 0.5 * (d == 0)).mean()) if len(d) else float("nan")
    if len(d) < 2:
        return {"difference": float(d.mean()) if len(d) else float("nan"),
                "ci_low": float("nan"), "ci_high": float("nan"), "p_value": float("nan"),
                "share_a_better": share}
    se = np.sqrt((1 / len(d) + n_val / n_train) * d.var(ddof=1))
    df = len(d) - 1
    if se == 0:
        p = 1.0 if d.mean() == 0 else 0.0
        half = 0.0
    else:
        p = float(2 * stats.t.sf(abs(d.mean()) / se, df))
        half = float(stats.t.ppf(0.975, df) * se)
    return {"difference": float(d.mean()), "ci_low": float(d.mean() - half),
            "ci_high": float(d.mean() + half), "p_value": p, "share_a_better": share}


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
