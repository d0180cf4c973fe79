"""Memorisation: how close each synthetic image is to the real training images.

Each synthetic image's nearest real training image is found in the baseline's
feature space (cosine), and its mean absolute pixel difference to that image and
to its own source decides whether it is a near copy. A generator that only
returns its inputs passes FID easily; this is the check that catches it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

CHUNK_BYTES = 64 * 2**20  # pixel differences held at once: ~64 MB of int16, whatever the set size


def nearest_real(synthetic_f: torch.Tensor, real_f: torch.Tensor, chunk: int = 4096,
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Index of each synthetic image's nearest real image by cosine similarity, and the distance."""
    real_n = F.normalize(real_f.float(), dim=1)
    index, distance = [], []
    for part in synthetic_f.float().split(chunk):
        similarity = F.normalize(part, dim=1) @ real_n.T
        best = similarity.max(dim=1)
        index.append(best.indices)
        distance.append(1 - best.values)
    if not index:
        return np.zeros(0, int), np.zeros(0)
    return torch.cat(index).numpy(), torch.cat(distance).numpy()


def mean_abs_difference(a: np.ndarray, rows_a: np.ndarray, b: np.ndarray, rows_b: np.ndarray,
                        chunk: int | None = None) -> np.ndarray:
    """Mean absolute pixel difference in [0, 1] between ``a[rows_a[k]]`` and ``b[rows_b[k]]``.

    uint8 images are gathered and differenced a chunk of pairs at a time (as int16, summed
    exactly in int64), so memory stays at ``CHUNK_BYTES`` for any number of images (the
    paper's 9,800 at 224 px cast whole to float32 took ~25 GB) and the result does not
    depend on the chunk size.
    """
    pixels = int(np.prod(a.shape[1:]))
    if chunk is None:
        chunk = max(1, CHUNK_BYTES // (2 * pixels))
    out = np.empty(len(rows_a))
    for start in range(0, len(rows_a), chunk):
        part = slice(start, start + chunk)
        diff = np.abs(a[rows_a[part]].astype(np.int16) - b[rows_b[part]].astype(np.int16))
        out[part] = diff.reshape(len(diff), -1).sum(axis=1, dtype=np.int64) / (pixels * 255)
    return out


def memorisation(images: np.ndarray, synthetic: np.ndarray, manifest: pd.DataFrame,
                 pool_rows: np.ndarray, synthetic_f: torch.Tensor, real_f: torch.Tensor,
                 index: pd.DataFrame, near_copy_mae: float, near_copy_fraction_max: float | None,
                 ) -> tuple[dict[str, Any], pd.DataFrame]:
    """Nearest real training image per synthetic image, and how many are near copies."""
    nearest, distance = nearest_real(synthetic_f, real_f)
    nearest_rows = pool_rows[nearest]
    source_rows = manifest["source_row"].to_numpy()
    sourced = source_rows >= 0
    every = np.arange(len(synthetic))
    mae_nearest = mean_abs_difference(synthetic, every, images, nearest_rows)
    mae_source = np.full(len(synthetic), np.nan)
    if sourced.any():
        mae_source[sourced] = mean_abs_difference(synthetic, every[sourced], images,
                                                  source_rows[sourced])
    near_copy = np.fmin(mae_nearest, mae_source) < near_copy_mae
    table = pd.DataFrame({
        "synthetic_id": manifest["synthetic_id"], "dx": manifest["dx"],
        "source_image_id": manifest["source_image_id"],
        "nearest_image_id": index["image_id"].to_numpy()[nearest_rows],
        "nearest_is_source": nearest_rows == source_rows, "cosine_distance": distance,
        "mae_nearest": mae_nearest, "mae_source": mae_source, "near_copy": near_copy})
    summary = {
        "nearest_is_source_fraction": float(table.loc[sourced, "nearest_is_source"].mean())
        if sourced.any() else None,
        "near_copy_fraction": float(near_copy.mean()) if len(table) else None,
        "near_copies": int(near_copy.sum()),
        "near_copy_fraction_max": near_copy_fraction_max,
        "near_copy_mae": near_copy_mae,
        "median_cosine_distance": float(np.median(distance)) if len(table) else None,
        "median_mae_source": float(np.median(mae_source[sourced])) if sourced.any() else None,
        "note": "nearest real training image in the baseline's feature space (cosine); a near "
                "copy is within near_copy_mae (mean absolute pixel difference, [0, 1]) of its "
                "nearest image or its source; near_copy_fraction_max is the gate's limit on "
                "their share (quality.thresholds.near_copy_fraction_max, null: not checked)",
    }
    return summary, table
