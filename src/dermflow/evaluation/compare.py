"""compare: paired bootstrap differences between experiments on the same test images."""

from __future__ import annotations

import itertools
from typing import Any

import pandas as pd

from dermflow.atomic import write_csv
from dermflow.evaluation.metrics import bootstrap, bootstrap_samples, paired_difference
from dermflow.evaluation.predictions import classes_of, probabilities, test_rows

COMPARED = ("balanced_accuracy", "macro_f1")


def compare_experiments(predictions: dict[str, str], *, resamples: int, seed: int,
                        out_csv: str) -> pd.DataFrame:
    """Paired bootstrap differences (a - b) for every pair of experiments on the same test set."""
    tests = {name: test_rows(path) for name, path in predictions.items()}
    rows: list[dict[str, Any]] = []
    for a, b in itertools.combinations(tests, 2):
        ta, tb = tests[a], tests[b]
        classes = classes_of(ta)
        if classes != classes_of(tb):
            rows += [{"a": a, "b": b, "metric": m, "note": "different tasks: not compared"}
                     for m in COMPARED]
            continue
        if not ta["image_id"].equals(tb["image_id"]):
            rows += [{"a": a, "b": b, "metric": m, "note": "different test sets: not paired"}
                     for m in COMPARED]
            continue
        samples = bootstrap_samples(len(ta), resamples, seed)
        labels = ta["label"].to_numpy()
        va = bootstrap(labels, probabilities(ta).argmax(1), classes, samples)
        vb = bootstrap(labels, probabilities(tb).argmax(1), classes, samples)
        rows += [{"a": a, "b": b, "metric": m, **paired_difference(va[m], vb[m]), "note": ""}
                 for m in COMPARED]
    table = pd.DataFrame(rows,
                         columns=["a", "b", "metric", "difference", "ci_low", "ci_high",
                                  "p_value", "note"])
    write_csv(table, out_csv)
    return table
