"""The ISIC 2018 Task 3 test set as an external test: prepared like the training images.

Its ground truth is a one-hot table (image, MEL, NV, BCC, AKIEC, BKL, DF, VASC).
The images go through the same validation (bad ones fail or are quarantined, as
``on_bad_input`` says), the same hair removal and the same square resize as
HAM10000's, into their own image cache; no model ever trains on them.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd

from dermflow.atomic import write_csv
from dermflow.cache import build_cache, cache_source
from dermflow.errors import DatasetError
from dermflow.hair import HairParams, remove_hair_all
from dermflow.validate import validate_dataset

log = logging.getLogger(__name__)

GROUND_TRUTH = "ISIC2018_Task3_Test_GroundTruth.csv"
IMAGES = "ISIC2018_Task3_Test_Images"  # the published zip (or its unpacked folder)
ISIC_COLUMNS = {"MEL": "mel", "NV": "nv", "BCC": "bcc", "AKIEC": "akiec", "BKL": "bkl",
                "DF": "df", "VASC": "vasc"}


def ground_truth_metadata(path: str | os.PathLike[str]) -> pd.DataFrame:
    """HAM10000-style metadata (lesion_id, image_id, dx) from the one-hot ground truth."""
    try:
        table = pd.read_csv(path)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as err:
        raise DatasetError(f"cannot read ground truth {path}: {err}") from err
    missing = [c for c in ("image", *ISIC_COLUMNS) if c not in table.columns]
    if missing:
        raise DatasetError(f"ground truth {path} lacks column(s) {', '.join(missing)}")
    onehot = table[list(ISIC_COLUMNS)].to_numpy(float)
    bad = table.loc[(onehot.max(1) != 1) | (onehot.sum(1) != 1), "image"]
    if len(bad):
        raise DatasetError(f"ground truth {path}: rows that are not one-hot: "
                           f"{', '.join(map(str, bad[:10]))}")
    dx = np.array(list(ISIC_COLUMNS.values()))[onehot.argmax(1)]
    return pd.DataFrame({"lesion_id": table["image"], "image_id": table["image"], "dx": dx})


def prepare_external(ground_truth: str | os.PathLike[str], sources: list[Path], *,
                     hair: HairParams | None, size: int, on_bad_input: str, threads: int,
                     hair_dir: str | os.PathLike[str], out_npy: str, out_index: str,
                     out_quarantine: str) -> pd.DataFrame:
    """Validate, clean and cache the external test images; returns the cache index."""
    meta_path = Path(hair_dir) / "metadata.csv"
    write_csv(ground_truth_metadata(ground_truth), meta_path)
    manifest, quarantine = validate_dataset(meta_path, sources, on_bad_input, threads=threads)
    write_csv(quarantine, out_quarantine)
    if hair is not None:
        cleaned = remove_hair_all(manifest, Path(hair_dir) / "images", Path(hair_dir) / "masks",
                                  hair, threads=threads)
        manifest = cache_source(manifest, cleaned)
    index = build_cache(manifest, size, out_npy, out_index, threads=threads)
    log.info("external test set: %d images cached (%d quarantined), per class %s", len(index),
             len(quarantine), index["dx"].value_counts().to_dict())
    return index
