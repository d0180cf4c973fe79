"""compare: paired differences between experiments on the same images, declared and exploratory.

Declared comparisons (``report.comparisons``, or by default the proposed model on C'GAN
data against the same model with classical augmentation and with no balancing) are the
claims the report makes: each pair, headline metric and test set (the test split, and
the external set when there is one) is one test, and their p-values are Holm-adjusted
across all of them. Every other pair is in the same table, labelled exploratory, with
unadjusted p-values: a lead to follow up, not a finding. Differences are paired lesion-
cluster bootstrap differences (dermflow.evaluation.significance).

A difference of a class average (balanced accuracy, macro-F1, macro ROC AUC) on a set
where some class has fewer than ``report.min_lesions`` lesions leans on classes whose
own spread the bootstrap cannot see (dermflow.evaluation.bootstrap): its row keeps the
numbers but says so in ``note`` ("too few lesions: ..."), has no Holm p-value, and is
left out of the Holm family, so it is never counted as holding. Only rows without a note
are tests.

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
from dermflow.evaluation.bootstrap import (
    MIN_LESIONS,
    UNIT,
    lesion_counts,
    resample_metrics,
    too_few,
)
from dermflow.evaluation.metrics import HEADLINE, METRICS
from dermflow.evaluation.predictions import classes_of, test_rows
from dermflow.evaluation.significance import corrected_t_test, holm, paired_difference

COLUMNS = ("scope", "split", "method", "a", "b", "metric", "difference", "ci_low", "ci_high",
           "p_value", "p_holm", "share_a_better", "unit", "resamples", "note")
BOOTSTRAP = "paired bootstrap"
T_TEST = "corrected resampled t-test"
TOO_FEW = "too few lesions"  # how a note that withholds a difference from the tests begins


def _paired(a: pd.DataFrame, b: pd.DataFrame) -> str:
    """Why two prediction tables cannot be compared, or '' when they can."""
    if classes_of(a) != classes_of(b):
        return "different tasks: not compared"
    if not a["image_id"].equals(b["image_id"]):
        return "different test sets: not paired"
    return ""


def _too_few(table: pd.DataFrame, min_lesions: int) -> str:
    """Why a class average's difference on this set is not a test, or '' when it is."""
    few = too_few(lesion_counts(table, classes_of(table)), min_lesions)
    if not few:
        return ""
    return (f"{TOO_FEW}: {'class' if len(few) == 1 else 'classes'} {', '.join(few)} below "
            f"report.min_lesions={min_lesions}")


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
                        runs: dict[str, str] | None = None,
                        min_lesions: int = MIN_LESIONS) -> pd.DataFrame:
    """The declared comparisons (Holm-adjusted) and every pair (exploratory), per test set;
    for cross-validated experiments (``runs``: name → runs.csv) also on the out-of-fold
    predictions and by the corrected t-test over runs. Class averages on a set with a
    class below ``min_lesions`` lesions are noted and left out of the Holm family."""
    rows: list[dict[str, Any]] = []
    names = list(predictions)
    pairs = [("declared", pair) for pair in declared] + [
        ("exploratory", pair) for pair in itertools.combinations(names, 2)]
    for split in ("oof", "test", "external"):
        tables = {name: test_rows(path, split) for name, path in predictions.items()}
        if not all(len(t) for t in tables.values()):
            continue
        values = {name: resample_metrics(t, resamples=resamples, seed=seed, names=HEADLINE,
                                         min_lesions=min_lesions)
                  for name, t in tables.items()}
        few = {name: _too_few(t, min_lesions) for name, t in tables.items()}
        for scope, (a, b) in pairs:
            unpaired = _paired(tables[a], tables[b])
            for metric in HEADLINE:
                found = {} if unpaired else paired_difference(values[a][metric],
                                                              values[b][metric])
                note = unpaired or (few[a] if METRICS[metric].class_average else "")
                rows.append({"scope": scope, "split": split, "method": BOOTSTRAP, "a": a,
                             "b": b, "metric": metric, **found, "unit": UNIT,
                             "resamples": resamples, "note": note or None})
    if runs:
        rows += run_comparisons({name: pd.read_csv(path) for name, path in runs.items()}, pairs)
    table = pd.DataFrame(rows, columns=list(COLUMNS))
    family = (table["scope"] == "declared") & table["note"].isna()
    table.loc[family, "p_holm"] = holm(table.loc[family, "p_value"].to_numpy(float))
    write_csv(table, out_csv)
    return table
