"""compare: paired differences between experiments on the same images, declared and exploratory.

Declared comparisons (``report.comparisons``, or by default the proposed model on C'GAN
data against the same model with classical augmentation and with no balancing) are the
claims the report makes: each pair, headline metric and test set (the test split, and
the external set when there is one) is one test, and their p-values are Holm-adjusted
across all of them. Every other pair is in the same table, labelled exploratory, with
unadjusted p-values: a lead to follow up, not a finding. Differences are paired lesion-
cluster bootstrap differences (dermflow.evaluation.significance).
"""

from __future__ import annotations

import itertools
from typing import Any

import pandas as pd

from dermflow.atomic import write_csv
from dermflow.evaluation.bootstrap import UNIT, resample_metrics
from dermflow.evaluation.metrics import HEADLINE
from dermflow.evaluation.predictions import classes_of, test_rows
from dermflow.evaluation.significance import holm, paired_difference

COLUMNS = ("scope", "split", "a", "b", "metric", "difference", "ci_low", "ci_high", "p_value",
           "p_holm", "unit", "resamples", "note")


def _paired(a: pd.DataFrame, b: pd.DataFrame) -> str:
    """Why two prediction tables cannot be compared, or '' when they can."""
    if classes_of(a) != classes_of(b):
        return "different tasks: not compared"
    if not a["image_id"].equals(b["image_id"]):
        return "different test sets: not paired"
    return ""


def compare_experiments(predictions: dict[str, str], declared: list[tuple[str, str]], *,
                        resamples: int, seed: int, out_csv: str) -> pd.DataFrame:
    """The declared comparisons (Holm-adjusted) and every pair (exploratory), per test set."""
    rows: list[dict[str, Any]] = []
    for split in ("test", "external"):
        tables = {name: test_rows(path, split) for name, path in predictions.items()}
        if not all(len(t) for t in tables.values()):
            continue
        values = {name: resample_metrics(t, resamples=resamples, seed=seed, names=HEADLINE)
                  for name, t in tables.items()}
        pairs = [("declared", pair) for pair in declared] + [
            ("exploratory", pair) for pair in itertools.combinations(tables, 2)]
        for scope, (a, b) in pairs:
            note = _paired(tables[a], tables[b])
            for metric in HEADLINE:
                found = {} if note else paired_difference(values[a][metric], values[b][metric])
                rows.append({"scope": scope, "split": split, "a": a, "b": b, "metric": metric,
                             **found, "unit": UNIT, "resamples": resamples, "note": note or None})
    table = pd.DataFrame(rows, columns=list(COLUMNS))
    declared_rows = table["scope"] == "declared"
    table.loc[declared_rows, "p_holm"] = holm(table.loc[declared_rows, "p_value"].to_numpy(float))
    write_csv(table, out_csv)
    return table
