"""compare: paired differences between experiments on the same images, declared and exploratory.

Declared comparisons (``report.comparisons``, or by default the proposed model on C'GAN
data against the same model with classical augmentation and with no balancing) are the
claims the report makes: each pair, headline metric and test set (the test split, and
the external set when there is one) is one test, and their p-values are Holm-adjusted
across all of them. Every other pair is in the same table, labelled exploratory, with
unadjusted p-values: a lead to follow up, not a finding. Differences are paired lesion-
cluster bootstrap differences (dermflow.evaluation.significance).

Cross-validated experiments add two kinds of test per pair and metric: the paired
bootstrap on the pooled out-of-fold predictions (set ``oof``; the test and external
sets are then the fold ensembles'), and the Nadeau-Bengio corrected resampled t-test
on the runs' own validation scores (set ``cv runs``), with the share of runs where a
beat b. All of them count in the Holm family.
"""

from __future__ import annotations

import itertools
from typing import Any

import pandas as pd

from dermflow.atomic import write_csv
from dermflow.evaluation.bootstrap import UNIT, resample_metrics
from dermflow.evaluation.metrics import HEADLINE
from dermflow.evaluation.predictions import classes_of, test_rows
from dermflow.evaluation.significance import corrected_t_test, holm, paired_difference

COLUMNS = ("scope", "split", "method", "a", "b", "metric", "difference", "ci_low", "ci_high",
           "p_value", "p_holm", "share_a_better", "unit", "resamples", "note")
BOOTSTRAP = "paired bootstrap"
T_TEST = "corrected resampled t-test"


def _paired(a: pd.DataFrame, b: pd.DataFrame) -> str:
    """Why two prediction tables cannot be compared, or '' when they can."""
    if classes_of(a) != classes_of(b):
        return "different tasks: not compared"
    if not a["image_id"].equals(b["image_id"]):
        return "different test sets: not paired"
    return ""


def _runs_paired(a: pd.DataFrame, b: pd.DataFrame) -> str:
    """Why two experiments' runs cannot be paired run by run, or '' when they can."""
    if list(zip(a["fold"], a["seed"], strict=True)) != list(zip(b["fold"], b["seed"],
                                                                strict=True)):
        return "different runs: not paired"
    if not a["val_digest"].equals(b["val_digest"]):
        return "different validation sets: not paired"
    return ""


def run_comparisons(runs: dict[str, pd.DataFrame], pairs: list[tuple[str, tuple[str, str]]],
                    ) -> list[dict[str, Any]]:
    """The corrected resampled t-test per pair and headline metric, over paired runs."""
    rows = []
    for scope, (a, b) in pairs:
        note = _runs_paired(runs[a], runs[b])
        for metric in HEADLINE:
            found = {} if note else corrected_t_test(
                runs[a][metric].to_numpy() - runs[b][metric].to_numpy(),
                float(runs[a]["n_val"].mean()), float(runs[a]["n_train"].mean()))
            rows.append({"scope": scope, "split": "cv runs", "method": T_TEST, "a": a, "b": b,
                         "metric": metric, **found, "unit": "run (fold, seed)",
                         "resamples": len(runs[a]), "note": note or None})
    return rows


def compare_experiments(predictions: dict[str, str], declared: list[tuple[str, str]], *,
                        resamples: int, seed: int, out_csv: str,
                        runs: dict[str, str] | None = None) -> pd.DataFrame:
    """The declared comparisons (Holm-adjusted) and every pair (exploratory), per test set;
    for cross-validated experiments (``runs``: name → runs.csv) also on the out-of-fold
    predictions and by the corrected t-test over runs."""
    rows: list[dict[str, Any]] = []
    names = list(predictions)
    pairs = [("declared", pair) for pair in declared] + [
        ("exploratory", pair) for pair in itertools.combinations(names, 2)]
    for split in ("oof", "test", "external"):
        tables = {name: test_rows(path, split) for name, path in predictions.items()}
        if not all(len(t) for t in tables.values()):
            continue
        values = {name: resample_metrics(t, resamples=resamples, seed=seed, names=HEADLINE)
                  for name, t in tables.items()}
        for scope, (a, b) in pairs:
            note = _paired(tables[a], tables[b])
            for metric in HEADLINE:
                found = {} if note else paired_difference(values[a][metric], values[b][metric])
                rows.append({"scope": scope, "split": split, "method": BOOTSTRAP, "a": a,
                             "b": b, "metric": metric, **found, "unit": UNIT,
                             "resamples": resamples, "note": note or None})
    if runs:
        rows += run_comparisons({name: pd.read_csv(path) for name, path in runs.items()}, pairs)
    table = pd.DataFrame(rows, columns=list(COLUMNS))
    declared_rows = table["scope"] == "declared"
    table.loc[declared_rows, "p_holm"] = holm(table.loc[declared_rows, "p_value"].to_numpy(float))
    write_csv(table, out_csv)
    return table
