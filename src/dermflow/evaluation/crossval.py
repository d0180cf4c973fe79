"""cross_predict and summarize_fold: the runs of a cross-validated experiment, joined.

A run is one fold's model trained with one seed (``cv.seeds`` per fold). Joined, the
runs of an experiment give one prediction table with three parts:

- ``oof``: out-of-fold predictions, every non-test image once, predicted by its fold's
  models (the mean of their probabilities over seeds), none of which trained on it;
- ``test`` and ``external``: the fold ensemble, the mean of all K x S models'
  probabilities for every test (and external) image (dermflow.ensemble, which
  ``dermflow predict`` averages a model folder with too, so what a user deploys is what
  was evaluated).

evaluate and compare then treat ``oof`` like a test split. Each run's own validation
scores (runs.csv) feed the corrected resampled t-test and the per-fold mean and SD.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from dermflow.atomic import write_csv, write_json
from dermflow.ensemble import ensemble_mean
from dermflow.errors import DatasetError
from dermflow.evaluation.metrics import point
from dermflow.evaluation.predictions import classes_of, probabilities

log = logging.getLogger(__name__)

KEYS = ["image_id", "lesion_id", "split", "source", "dx", "label"]
BUDGET = ("optimizer_steps", "images_seen")  # a run's training budget, summed over the runs


def _mean(parts: dict[str, pd.DataFrame], prob: list[str], what: str) -> pd.DataFrame:
    """Rows identified by image and split, probabilities averaged over the parts (named by
    their files), which must hold the same rows: one fold's seeds on its validation images,
    or every run's held-out ones. DatasetError naming two files whose rows differ."""
    keyed = {name: part.set_index(["split", "image_id"]).sort_index()
             for name, part in parts.items()}
    first_name, first = next(iter(keyed.items()))
    for name, part in keyed.items():
        twice = part.index[part.index.duplicated()]
        missing, extra = first.index.difference(part.index), part.index.difference(first.index)
        if len(twice) or len(missing) or len(extra):
            problem = (f"{name} predicts {twice[0][1]} ({twice[0][0]}) twice" if len(twice) else
                       f"{name} and {first_name} predict different {what} images "
                       f"({len(missing)} missing, {len(extra)} extra, e.g. "
                       f"{(missing if len(missing) else extra)[0][1]})")
            raise DatasetError(f"{problem}; runs averaged together must predict the same "
                               "images: rerun them")
    table = first[[k for k in KEYS if k not in ("split", "image_id")]].copy()
    table[prob] = ensemble_mean([part[prob].to_numpy() for part in keyed.values()])
    return table.reset_index()


def join_runs(runs: dict[tuple[int, int], pd.DataFrame],
              files: dict[tuple[int, int], str] | None = None) -> pd.DataFrame:
    """Out-of-fold rows (split ``oof``) and fold-ensemble rows (``test``, ``external``);
    ``files`` names each run's predictions in errors."""
    name = {run: (files or {}).get(run, f"fold {run[0]} seed {run[1]}") for run in runs}
    first = next(iter(runs.values()))
    prob = [f"prob_{c}" for c in classes_of(first)]
    folds = sorted({fold for fold, _ in runs})
    oof = []
    for fold in folds:
        seeds = {name[run]: t[t["split"] == "val"] for run, t in runs.items() if run[0] == fold}
        oof.append(_mean(seeds, prob, "validation").assign(split="oof"))
    oof_table = pd.concat(oof, ignore_index=True)
    twice = oof_table["image_id"][oof_table["image_id"].duplicated()]
    if len(twice):
        raise DatasetError(f"images validated in more than one fold: {', '.join(twice[:5])}")
    held_out = {name[run]: t[t["split"].isin(["test", "external"])] for run, t in runs.items()}
    table = pd.concat([oof_table, _mean(held_out, prob, "test and external")],
                      ignore_index=True)
    table["pred"] = table[prob].to_numpy().argmax(1)
    return table[[*KEYS, *prob, "pred"]]


def run_scores(fold: int, seed: int, predictions: pd.DataFrame,
               metrics: dict[str, Any]) -> dict[str, Any]:
    """One run's validation scores, with its sizes and a digest of its validation images
    (runs of two experiments pair up only where they validated on the same images).

    n_train counts the run's real training images only: synthetic, augmented and repeated
    rows are made from those images and add no observations of their own, and the
    corrected t-test's n_val / n_train is the share of the real data each run holds out.
    """
    val = predictions[predictions["split"] == "val"]
    ids = "\n".join(sorted(val["image_id"].astype(str)))
    return {"fold": fold, "seed": seed, "n_val": len(val),
            "n_train": int(metrics["train_images"]["real"]),
            "val_digest": hashlib.sha256(ids.encode()).hexdigest()[:16],
            **point(val["label"].to_numpy(), probabilities(val))}


def cross_predict(runs: dict[tuple[int, int], tuple[str, str]], *, out_predictions: str,
                  out_runs: str, out_metrics: str) -> pd.DataFrame:
    """Join an experiment's runs ((fold, seed) → its predictions.csv and metrics.json)."""
    tables = {run: pd.read_csv(paths[0]) for run, paths in runs.items()}
    trained = {run: json.loads(Path(paths[1]).read_text()) for run, paths in runs.items()}
    joined = join_runs(tables, {run: paths[0] for run, paths in runs.items()})
    scores = pd.DataFrame([run_scores(f, s, tables[(f, s)], trained[(f, s)])
                           for f, s in sorted(runs)])
    first = trained[min(runs)]
    write_csv(joined, out_predictions)
    write_csv(scores, out_runs)
    write_json({
        **{k: first[k] for k in ("experiment", "name", "balance", "model", "task",
                                 "parameters_millions") if k in first},
        "runs": len(runs), "training_seconds": sum(t["training_seconds"] for t in trained.values()),
        **{k: sum(t[k] for t in trained.values()) for k in BUDGET},
        "images_per_s": float(np.median([t["images_per_s"] for t in trained.values()])),
        "per_run": [{"fold": f, "seed": s, "best_epoch": trained[(f, s)]["best_epoch"],
                     "training_seconds": trained[(f, s)]["training_seconds"],
                     **{k: trained[(f, s)][k] for k in ("epoch_images", *BUDGET)}}
                    for f, s in sorted(runs)]}, out_metrics)
    log.info("%d runs joined: %d out-of-fold, %d test, %d external predictions", len(runs),
             *(int((joined["split"] == s).sum()) for s in ("oof", "test", "external")))
    return joined


def summarize_fold(fold: int, runs: dict[tuple[str, int], tuple[str, str]],
                   out_csv: str) -> pd.DataFrame:
    """One fold's validation scores for every experiment and seed ((name, seed) → paths)."""
    rows = [{"experiment": name, **run_scores(fold, seed, pd.read_csv(paths[0]),
                                              json.loads(Path(paths[1]).read_text()))}
            for (name, seed), paths in sorted(runs.items())]
    table = pd.DataFrame(rows)
    write_csv(table, out_csv)
    return table
