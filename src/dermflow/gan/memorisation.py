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


def _mae(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Mean absolute pixel difference per image pair, in [0, 1]."""
    return np.abs(a.astype(np.float32) - b.astype(np.float32)).mean(axis=(1, 2, 3)) / 255


def memorisation(images: np.ndarray, synthetic: np.ndarray, manifest: pd.DataFrame,
                 pool_rows: np.ndarray, synthetic_f: torch.Tensor, real_f: torch.Tensor,
                 index: pd.DataFrame, near_copy_mae: float) -> tuple[dict[str, Any], pd.DataFrame]:
    """Nearest real training image per synthetic image, and how many are near copies."""
    nearest, distance = nearest_real(synthetic_f, real_f)
    nearest_rows = pool_rows[nearest]
    source_rows = manifest["source_row"].to_numpy()
    sourced = source_rows >= 0
    mae_nearest = _mae(synthetic, images[nearest_rows]) if len(synthetic) else np.zeros(0)
    mae_source = np.full(len(synthetic), np.nan)
    if sourced.any():
        mae_source[sourced] = _mae(synthetic[sourced], images[source_rows[sourced]])
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
        "near_copy_mae": near_copy_mae,
        "median_cosine_distance": float(np.median(distance)) if len(table) else None,
        "median_mae_source": float(np.median(mae_source[sourced])) if sourced.any() else None,
        "note": "nearest real training image in the baseline's feature space (cosine); a near "
                "copy is within near_copy_mae (mean absolute pixel difference, [0, 1]) of its "
                "nearest image or its source",
    }
    return summary, table
