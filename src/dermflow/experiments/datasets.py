"""build_dataset: the training data of each balance mode, and its labels.

``none``: the real images and their split. A generator kind (``cgan``, ``dcgan``; see
dermflow.gan.registry): real + the generator's synthetic images, split as split_pool
decided (per protocol). ``augment``: the paper's
ablation (iv): the same per-class numbers as synthesis, made by classical
augmentation (flips, rotation, shift/scale, colour jitter) of training-pool
images, split the same way as synthetic images would be. ``oversample``: the control
synthetic images must beat: real train-split images drawn again (the synthesis plan's
seeded round-robin draws of sources), per class as many as a generator dataset's train
split gets synthetic images (the whole plan under ``grouped``, the train share of the
pooled split under ``paper``), added to train only.

A dataset is a table (``dataset.csv``) whose rows point into arrays: ``cache``
(the real image cache), ``synthetic`` or ``augmented``; no real image is copied (a
repeat is a second row pointing at the same cache row, with ``source`` ``repeat``).
dermflow.data.cache.load_dataset reads it back.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from dermflow.atomic import atomic_path, write_csv
from dermflow.data.cache import load_split_cache
from dermflow.data.split import pool_split, split_fractions, training_pool
from dermflow.errors import DatasetError
from dermflow.gan.plan import plan, synthetic_counts
from dermflow.gan.registry import BALANCES, GENERATORS
from dermflow.labels import CLASSES
from dermflow.training.augmentation import augment
from dermflow.training.batches import batches

log = logging.getLogger(__name__)

COLUMNS = ("image_id", "source", "array", "row", "lesion_id", "dx", "label", "split")


def _with_rows(pooled: pd.DataFrame, index: pd.DataFrame, extra: pd.DataFrame | None,
               array: str) -> pd.DataFrame:
    """Pool-split rows joined to where each image lives (cache row or extra-array row)."""
    real_rows = index.set_index("image_id")["row"]
    table = pooled.copy()
    is_real = table["source"] == "real"
    table["array"] = np.where(is_real, "cache", array)
    table["row"] = -1
    table.loc[is_real, "row"] = real_rows.loc[table.loc[is_real, "image_id"]].to_numpy()
    if extra is not None and (~is_real).any():
        extra_rows = extra.set_index("synthetic_id")["row"]
        table.loc[~is_real, "row"] = extra_rows.loc[table.loc[~is_real, "image_id"]].to_numpy()
    table["label"] = table["dx"].map(CLASSES.index)
    return table[list(COLUMNS)]


def augmented_images(images: np.ndarray, manifest: pd.DataFrame, seed: int,
                     batch_size: int = 64) -> np.ndarray:
    """uint8 augmented copies of the manifest's source rows; batch k seeded by (seed, k)."""
    out = np.zeros((len(manifest), *images.shape[1:]), np.uint8)
    for k, chunk in enumerate(tqdm(batches(torch.arange(len(manifest)), batch_size),
                                   desc="augment", unit="batch", mininterval=5)):
        rows = manifest["source_row"].to_numpy()[chunk.numpy()]
        x = torch.from_numpy(images[rows]).permute(0, 3, 1, 2).float() / 255
        gen = torch.Generator().manual_seed(int(np.random.SeedSequence([seed, k]).generate_state(
            1)[0]))
        y = augment(x, gen)
        out[chunk.numpy()] = (y * 255).round().clamp(0, 255).to(torch.uint8).permute(
            0, 2, 3, 1).numpy()
    return out


def synthesis_plan(index: pd.DataFrame, protocol: str, synthesis: dict[str, Any], seed: int,
                   ) -> pd.DataFrame:
    """The manifest synthesis plans from the protocol's training pool (generate_synthetic's
    per-class counts and draws of sources): ``augment`` makes its images, ``oversample``
    counts how many of them split_pool puts in train."""
    pool = index[training_pool(index, protocol).to_numpy()]
    return plan(pool, synthetic_counts(pool["dx"].value_counts().to_dict(), synthesis), seed)


def repeated_rows(index: pd.DataFrame, pooled: pd.DataFrame, seed: int) -> pd.DataFrame:
    """Dataset rows repeating train-split real images, per class as many as the synthetic
    images that ``pooled`` (split_pool's split of the planned synthesis) puts in train: under
    ``grouped`` every planned image, under ``paper`` the train split's share of the pooled
    set, so the repeats match a generator dataset's train split class for class. Sources are
    drawn as synthesis draws them (under ``grouped`` from the same pool with the same seed, so
    repeat k is the source of synthetic image k), so each real image of a class repeats
    about as often as any other."""
    added = pooled[(pooled["source"] != "real") & (pooled["split"] == "train")]
    counts = added["dx"].value_counts().reindex(list(CLASSES), fill_value=0).to_dict()
    manifest = plan(index[index["split"] == "train"], counts, seed)
    return pd.DataFrame({
        "image_id": manifest["synthetic_id"].str.replace("SYN_", "REP_"), "source": "repeat",
        "array": "cache", "row": manifest["source_row"].astype(int),
        "lesion_id": manifest["lesion_id"], "dx": manifest["dx"],
        "label": manifest["dx"].map(CLASSES.index), "split": "train"})[list(COLUMNS)]


def build_dataset(balance: str, cache_npy: str, index_csv: str, split_csv: str, *,
                  protocol: str, split_settings: dict[str, Any], seed: int,
                  out_csv: str | os.PathLike[str], synthetic_manifest: str | None = None,
                  synthetic_split: str | None = None, synthesis: dict[str, Any] | None = None,
                  out_npy: str | None = None, folds: int = 1, fold: int = 0) -> pd.DataFrame:
    """Write dataset.csv (and, for ``augment``, the augmented images) for one balance mode
    (of cross-validation fold ``fold`` of ``folds``, which only the paper protocol's pooled
    split of the planned images needs). ``augment`` and ``oversample`` need ``synthesis``."""
    images, index = load_split_cache(cache_npy, index_csv, split_csv)
    fractions = split_fractions(split_settings)
    split = index[["image_id", "lesion_id", "dx", "split"]]
    if balance == "none":
        table = _with_rows(split.assign(source="real"), index, None, "cache")
    elif balance in GENERATORS:
        if synthetic_manifest is None or synthetic_split is None:
            raise ValueError(f"balance {balance} needs the synthetic manifest and split_pool's "
                             "split")
        table = _with_rows(pd.read_csv(synthetic_split), index, pd.read_csv(synthetic_manifest),
                           "synthetic")
    elif balance == "augment":
        if synthesis is None or out_npy is None:
            raise ValueError("balance augment needs the synthesis settings and an output array")
        manifest = synthesis_plan(index, protocol, synthesis, seed)
        with atomic_path(out_npy) as tmp, open(tmp, "wb") as fh:
            np.save(fh, augmented_images(images, manifest, seed))
        manifest["synthetic_id"] = manifest["synthetic_id"].str.replace("SYN_", "AUG_")
        pooled = pool_split(split, manifest, protocol, fractions, split_settings["seed"],
                            folds=folds, fold=fold)
        pooled["source"] = pooled["source"].replace("synthetic", "augmented")
        table = _with_rows(pooled, index, manifest, "augmented")
    elif balance == "oversample":
        if synthesis is None:
            raise ValueError("balance oversample needs the synthesis settings")
        pooled = pool_split(split, synthesis_plan(index, protocol, synthesis, seed),
                            protocol, fractions, split_settings["seed"], folds=folds, fold=fold)
        table = pd.concat([_with_rows(split.assign(source="real"), index, None, "cache"),
                           repeated_rows(index, pooled, seed)], ignore_index=True)
    else:
        raise ValueError(f"balance: unknown mode {balance!r}; one of {', '.join(BALANCES)}")
    if protocol == "grouped" and (table.loc[table["split"] != "train", "source"] != "real").any():
        raise DatasetError("grouped protocol: a non-real image reached val or test")
    write_csv(table, out_csv)
    log.info("%s dataset (%s): %s", balance, protocol,
             table.groupby(["split", "source"]).size().to_dict())
    return table

