"""split_dataset, split_folds, fold_split and split_pool: which images train, select and test.

``grouped`` (default) keeps every lesion in one split and stratifies by class.
Since each lesion has one diagnosis, this decomposes per class: each class's
lesions are dealt to the splits, largest first, always to the split furthest
below its target share, so every split gets every class when a class has at
least three lesions. ``paper`` is the source paper's image-level stratified
split, kept to measure the leakage it causes.

Cross-validation (``cv.folds`` K > 1) holds out the same test split and deals the
other images into K folds the same way (grouped: by lesion, per class; paper: image
level); fold f's split trains on the other K - 1 folds and validates on fold f.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedKFold, train_test_split

from dermflow.atomic import write_csv, write_json
from dermflow.errors import DatasetError
from dermflow.labels import CLASSES

SPLITS = ("train", "val", "test")
PathLike = str | os.PathLike[str]
log = logging.getLogger(__name__)


def _deal_lesions(sizes: pd.Series, fractions: np.ndarray, rng: np.random.Generator) -> dict:
    """lesion_id → split index, filling each split towards its share of images."""
    order = sizes.index.to_numpy()[rng.permutation(len(sizes))]
    order = sorted(order, key=lambda lesion: -sizes[lesion])  # stable: ties stay shuffled
    targets = fractions * sizes.sum()
    counts = np.zeros(len(fractions))
    assignment = {}
    for lesion in order:
        unmet = (targets - counts) / targets
        choice = int(np.lexsort((-targets, -unmet))[0])  # most unmet share, then larger split
        assignment[lesion] = choice
        counts[choice] += sizes[lesion]
    return assignment


def split_grouped(table: pd.DataFrame, fractions: tuple[float, float, float],
                  seed: int) -> pd.Series:
    """Split index per row, stratified by dx and grouped by lesion_id."""
    _check_lesions(table)
    split = pd.Series(-1, index=table.index)
    for k, dx in enumerate(CLASSES):
        rows = table[table["dx"] == dx]
        sizes = rows.groupby("lesion_id").size()
        if len(sizes) < len(SPLITS):
            raise DatasetError(f"class {dx} has {len(sizes)} lesion(s); a grouped split needs "
                               f"at least {len(SPLITS)} to put it in every split")
        rng = np.random.default_rng([seed, k])
        assignment = _deal_lesions(sizes, np.asarray(fractions, float), rng)
        split[rows.index] = rows["lesion_id"].map(assignment)
    return split


def _check_lesions(table: pd.DataFrame) -> None:
    per_lesion = table.groupby("lesion_id")["dx"].nunique()
    mixed = per_lesion[per_lesion > 1]
    if len(mixed):
        raise DatasetError(f"lesion(s) with several diagnoses: {', '.join(mixed.index[:10])}")


def folds_grouped(table: pd.DataFrame, folds: int, seed: int) -> pd.Series:
    """Fold index per row: K folds of about equal size, stratified by dx, grouped by lesion."""
    _check_lesions(table)
    fold = pd.Series(-1, index=table.index)
    for k, dx in enumerate(CLASSES):
        rows = table[table["dx"] == dx]
        if rows.empty:
            continue
        sizes = rows.groupby("lesion_id").size()
        if len(sizes) < folds:
            raise DatasetError(f"class {dx} has {len(sizes)} lesion(s) outside the test split; "
                               f"cv.folds: {folds} needs at least {folds} to put it in every "
                               "fold (use fewer folds)")
        rng = np.random.default_rng([seed, k, folds])
        fold[rows.index] = rows["lesion_id"].map(_deal_lesions(sizes, np.full(folds, 1 / folds),
                                                               rng))
    return fold


def folds_images(table: pd.DataFrame, folds: int, seed: int) -> pd.Series:
    """Fold index per row: K image-level folds stratified by dx (the paper's way)."""
    counts = table["dx"].value_counts()
    if counts.min() < folds:
        raise DatasetError(f"class {counts.idxmin()} has {counts.min()} image(s) outside the "
                           f"test split; cv.folds: {folds} needs at least {folds}")
    fold = pd.Series(-1, index=table.index)
    splitter = StratifiedKFold(folds, shuffle=True, random_state=seed)
    for k, (_, rows) in enumerate(splitter.split(table.index, table["dx"])):
        fold.iloc[rows] = k
    return fold


def split_images(table: pd.DataFrame, fractions: tuple[float, float, float],
                 seed: int) -> pd.Series:
    """Split index per row, stratified by dx at image level (the source paper's split)."""
    train, val, test = fractions
    try:
        rest, test_idx = train_test_split(table.index, test_size=test, stratify=table["dx"],
                                          random_state=seed)
        train_idx, val_idx = train_test_split(rest, test_size=val / (train + val),
                                              stratify=table.loc[rest, "dx"], random_state=seed)
    except ValueError as err:  # too few images of a class, or in all, to stratify
        raise DatasetError(f"paper split of {len(table)} images, per class "
                           f"{table['dx'].value_counts().to_dict()}: {err}") from err
    split = pd.Series(-1, index=table.index)
    for k, idx in enumerate((train_idx, val_idx, test_idx)):
        split[idx] = k
    return split


def make_split(manifest: pd.DataFrame, protocol: str, fractions: tuple[float, float, float],
               seed: int) -> pd.DataFrame:
    """split.csv's table: image_id, lesion_id, dx, split — same seed, same split."""
    table = manifest.sort_values("image_id", kind="stable").reset_index(drop=True)
    counts = table["dx"].value_counts()
    absent = [dx for dx in CLASSES if dx not in counts]
    if absent:
        raise DatasetError(
            f"class(es) {', '.join(absent)}: 0 images in the manifest (absent from the "
            f"metadata, or all quarantined: see quarantine.csv); images per class: "
            f"{counts.to_dict()}. Every HAM10000 class must be in every split, whatever the task")
    if protocol == "grouped":
        split = split_grouped(table, fractions, seed)
    elif protocol == "paper":
        split = split_images(table, fractions, seed)
    else:
        raise ValueError(f"protocol: unknown value {protocol!r}")
    out = table[["image_id", "lesion_id", "dx"]].copy()
    out["split"] = split.map(dict(enumerate(SPLITS)))
    _require_every_class_everywhere(out, protocol)
    log.info("%s split (seed %d) of %d images: %s", protocol, seed, len(out),
             out["split"].value_counts().reindex(list(SPLITS)).to_dict())
    return out


def make_folds(manifest: pd.DataFrame, protocol: str, fractions: tuple[float, float, float],
               seed: int, folds: int) -> pd.DataFrame:
    """folds.csv's table: image_id, lesion_id, dx, fold: ``test`` (make_split's test split,
    unchanged) or 0..K-1 for the other images, dealt as the protocol splits."""
    split = make_split(manifest, protocol, fractions, seed)
    rest = split[split["split"] != "test"]
    fold = (folds_grouped if protocol == "grouped" else folds_images)(rest, folds, seed)
    out = split[["image_id", "lesion_id", "dx"]].assign(fold="test")
    out.loc[rest.index, "fold"] = fold.astype(str)
    log.info("%d %s folds of %d images (+ %d test): %s", folds, protocol, len(rest),
             int((out["fold"] == "test").sum()), out["fold"].value_counts().sort_index().to_dict())
    return out


def split_of_fold(folds: pd.DataFrame, fold: int) -> pd.DataFrame:
    """Fold ``fold``'s split.csv: the other folds train, this one validates, test stays test."""
    name = folds["fold"].astype(str)
    split = np.where(name == "test", "test", np.where(name == str(fold), "val", "train"))
    return folds[["image_id", "lesion_id", "dx"]].assign(split=split)


def _require_every_class_everywhere(split: pd.DataFrame, protocol: str) -> None:
    """DatasetError naming each class that some split lacks, with its images per split."""
    counts = pd.crosstab(split["dx"], split["split"]).reindex(columns=list(SPLITS), fill_value=0)
    short = counts[(counts == 0).any(axis=1)]
    if short.empty:
        return
    details = "; ".join(
        f"{dx}: {row.sum()} image(s), " + ", ".join(f"{row[s]} {s}" for s in SPLITS)
        for dx, row in short.iterrows())
    raise DatasetError(f"{protocol} split: class(es) missing from a split ({details}). Every "
                       "class must be in train, val and test: add images of it or change "
                       "the split fractions")


def split_summary(split: pd.DataFrame) -> dict:
    """Images per class and split, achieved fractions, and lesions shared across splits."""
    counts = pd.crosstab(split["dx"], split["split"]).reindex(columns=list(SPLITS), fill_value=0)
    fractions = counts.div(counts.sum(axis=1), axis=0).round(4)
    lesion_splits = split.groupby("lesion_id")["split"].nunique()
    return {
        "images": {dx: counts.loc[dx].to_dict() for dx in counts.index},
        "fractions": {dx: fractions.loc[dx].to_dict() for dx in fractions.index},
        "totals": counts.sum().to_dict(),
        "lesions_in_several_splits": int((lesion_splits > 1).sum()),
    }


def fold_summary(folds: pd.DataFrame) -> dict:
    """Images per class and fold (and test), and lesions shared across folds."""
    counts = pd.crosstab(folds["dx"], folds["fold"].astype(str))
    return {"images": {dx: counts.loc[dx].to_dict() for dx in counts.index},
            "totals": counts.sum().to_dict(),
            "lesions_in_several_folds": int((folds.groupby("lesion_id")["fold"].nunique() > 1)
                                            .sum())}


def training_pool(split: pd.DataFrame, protocol: str) -> pd.Series:
    """Which real images anything may learn from: the train split, or (paper) all of them."""
    return split["split"] == "train" if protocol == "grouped" else pd.Series(True, split.index)


POOL_COLUMNS = ("image_id", "lesion_id", "dx", "source", "source_image_id", "split")


def pool_split(split: pd.DataFrame, manifest: pd.DataFrame, protocol: str,
               fractions: tuple[float, float, float], seed: int, *, folds: int = 1,
               fold: int = 0) -> pd.DataFrame:
    """Real + synthetic images with their split.

    ``grouped``: real images keep their split and synthetic ones join train only.
    ``paper``: the pooled set is split 70:20:10 at image level, stratified by class,
    as the source paper did, so synthetic images (and their sources' lesions) reach
    val and test and the leakage can be measured. With ``folds`` K > 1 (paper), the
    pool's test part is held out the same way and the rest dealt into K image-level
    folds; fold ``fold`` validates.
    """
    real = split.assign(source="real", source_image_id=split["image_id"])
    synthetic = pd.DataFrame({"image_id": manifest["synthetic_id"],
                              "lesion_id": manifest["lesion_id"], "dx": manifest["dx"],
                              "source": "synthetic",
                              "source_image_id": manifest["source_image_id"], "split": "train"})
    table = pd.concat([real, synthetic], ignore_index=True)
    if protocol == "paper" and folds > 1:
        test = split_images(table, fractions, seed) == SPLITS.index("test")
        rest = table[~test]
        table["split"] = "test"
        table.loc[rest.index, "split"] = np.where(folds_images(rest, folds, seed) == fold,
                                                  "val", "train")
    elif protocol == "paper":
        table["split"] = split_images(table, fractions, seed).map(dict(enumerate(SPLITS)))
    elif protocol != "grouped":
        raise ValueError(f"protocol: unknown value {protocol!r}")
    log.info("%s pool: %s", protocol,
             table.groupby(["source", "split"]).size().to_dict())
    return table[list(POOL_COLUMNS)]


# The rules' stages: a table read, split and written.


def split_fractions(settings: dict[str, Any]) -> tuple[float, float, float]:
    """The train, val and test fractions of the config's ``split`` section."""
    return settings["train"], settings["val"], settings["test"]


def split_dataset(manifest_csv: PathLike, protocol: str, settings: dict[str, Any], *,
                  out_split: PathLike, out_summary: PathLike) -> dict:
    """Rule split_dataset and ``dermflow split``: the manifest's split (``settings``: the
    config's ``split`` section) and its summary, which is returned."""
    split = make_split(pd.read_csv(manifest_csv), protocol, split_fractions(settings),
                       settings["seed"])
    write_csv(split, out_split)
    summary = split_summary(split)
    write_json(summary, out_summary)
    return summary


def split_folds(manifest_csv: PathLike, protocol: str, settings: dict[str, Any],
                folds: int, *, out_folds: PathLike, out_summary: PathLike) -> None:
    """Rule split_folds: the manifest's test split and ``folds`` folds, and their summary."""
    table = make_folds(pd.read_csv(manifest_csv), protocol, split_fractions(settings),
                       settings["seed"], folds)
    write_csv(table, out_folds)
    write_json(fold_summary(table), out_summary)


def fold_split(folds_csv: PathLike, fold: int, *, out_split: PathLike) -> None:
    """Rule fold_split: fold ``fold``'s split.csv (split_of_fold)."""
    write_csv(split_of_fold(pd.read_csv(folds_csv), fold), out_split)


def split_pool(split_csv: PathLike, manifest_csv: PathLike, protocol: str,
               settings: dict[str, Any], *, folds: int, fold: int, out_split: PathLike) -> None:
    """Rule split_pool: the real and synthetic images' split (pool_split)."""
    pooled = pool_split(pd.read_csv(split_csv), pd.read_csv(manifest_csv), protocol,
                        split_fractions(settings), settings["seed"], folds=folds, fold=fold)
    write_csv(pooled, out_split)
