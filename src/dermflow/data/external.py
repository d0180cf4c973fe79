"""The ISIC 2018 Task 3 test set as an external test: prepared like the training images.

The images go through the same validation (bad ones fail or are quarantined, as
``on_bad_input`` says), the same hair removal and the same square resize as
HAM10000's, into their own image cache; no model ever trains on them. A
ground-truth row without an image is no bad input here: the published zip lacks
one of the 1,512 images its ground truth lists. Such rows are left out with a
warning and stay in quarantine.csv (problem ``missing_file``), where the report
can count them. Classes need not all be present: nothing is split or trained.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pandas as pd

from dermflow.atomic import write_csv
from dermflow.data.cache import build_cache, cache_source
from dermflow.data.hair import HairParams, remove_hair_all
from dermflow.data.isic2018 import ground_truth_metadata
from dermflow.data.validate import MIN_SIDE, validate_dataset

log = logging.getLogger(__name__)


def prepare_external(ground_truth: str | os.PathLike[str], sources: list[Path], *,
                     hair: HairParams | None, size: int, on_bad_input: str, threads: int,
                     hair_dir: str | os.PathLike[str], out_npy: str, out_index: str,
                     out_quarantine: str, min_side: int = MIN_SIDE) -> pd.DataFrame:
    """Validate (the dataset's size policy: ``min_side``), clean and cache the external test
    images; returns the cache index."""
    meta_path = Path(hair_dir) / "metadata.csv"
    write_csv(ground_truth_metadata(ground_truth), meta_path)
    manifest, quarantine = validate_dataset(meta_path, sources, on_bad_input, threads=threads,
                                            required_classes=(), missing_is_bad=False,
                                            min_side=min_side)
    write_csv(quarantine, out_quarantine)
    missing = int((quarantine["problem"] == "missing_file").sum())
    if missing:
        log.warning("external test set: %d ground-truth row(s) without an image in %s, left "
                    "out (problem missing_file in %s)", missing,
                    ", ".join(map(str, sources)), out_quarantine)
    if hair is not None:
        cleaned = remove_hair_all(manifest, Path(hair_dir) / "images", Path(hair_dir) / "masks",
                                  hair, threads=threads)
        manifest = cache_source(manifest, cleaned)
    index = build_cache(manifest, size, out_npy, out_index, threads=threads)
    log.info("external test set: %d images cached (%d quarantined), per class %s", len(index),
             len(quarantine), index["dx"].value_counts().to_dict())
    return index
