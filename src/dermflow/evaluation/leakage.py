"""The leakage audit of a dataset: what of val and test the training split has already seen.

It counts lesions in more than one split, non-real (synthetic or augmented) images in
val or test, and near-duplicate image pairs across train and val/test (difference
hashes within a few bits, confirmed by a small mean pixel difference). Under
``grouped`` the first two are zero by construction; under ``paper`` they measure the
leak the source paper's protocol has.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

from dermflow.data.cache import load_dataset

PAIRS = 256  # candidate pairs compared at once: 2 x 256 float32 images at 224 px, ~300 MB


def dhash(images: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
    """64-bit difference hashes (9x8 grayscale gradients) of N x H x W x 3 uint8 images, or
    of ``images[rows]`` read one image at a time (a dataset's rows, never gathered whole)."""
    rows = np.arange(len(images)) if rows is None else np.asarray(rows)
    out = np.zeros(len(rows), np.uint64)
    for i, row in enumerate(rows):
        image = images[row]
        gray = cv2.resize(cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2GRAY), (9, 8),
                          interpolation=cv2.INTER_AREA)
        bits = (gray[:, 1:] > gray[:, :-1]).ravel()
        out[i] = np.packbits(bits).view(">u8")[0]
    return out


def near_duplicate_pairs(a: np.ndarray, b: np.ndarray, max_bits: int, chunk: int = 512,
                         ) -> np.ndarray:
    """Index pairs (into a, into b) whose hashes differ in at most ``max_bits`` bits."""
    found = []
    for start in range(0, len(a), chunk):
        xor = a[start:start + chunk, None] ^ b[None, :]
        bits = np.unpackbits(xor.view(np.uint8).reshape(*xor.shape, 8), axis=-1).sum(-1)
        i, j = np.nonzero(bits <= max_bits)
        found.append(np.stack([i + start, j], axis=1))
    return np.concatenate(found) if found else np.zeros((0, 2), int)


def leakage_audit(dataset_csv: str, cache_npy: str, extra_npy: str | None, max_bits: int,
                  max_mae: float) -> dict[str, Any]:
    """Lesions across splits, non-real images in val/test, near duplicates across splits.

    A near duplicate is a (val/test, train) pair whose difference hashes are within
    ``max_bits`` bits and whose pixels differ by at most ``max_mae`` on average ([0, 1]):
    the hash finds candidates fast, the pixels confirm them. Each confirmed pair is listed
    (``near_duplicates``), so a reader can look at the images the count is about. Train rows
    pointing at the same image (its repeats) count as that image once, named by its first
    row (the real one), so datasets with and without repeats are counted alike.
    """
    images, table = load_dataset(dataset_csv, cache_npy, extra_npy)
    shared = table.groupby("lesion_id")["split"].nunique()
    held_out = (table["split"] != "train").to_numpy()
    held_rows = table[held_out]
    train_rows = table[~held_out].drop_duplicates(["array", "row"])
    held_pos, train_pos = held_rows["pos"].to_numpy(), train_rows["pos"].to_numpy()
    pairs = near_duplicate_pairs(dhash(images, held_pos), dhash(images, train_pos), max_bits)
    found = []
    for start in range(0, len(pairs), PAIRS):
        part = pairs[start:start + PAIRS]
        a = images[held_pos[part[:, 0]]].astype(np.float32)
        b = images[train_pos[part[:, 1]]].astype(np.float32)
        mae = np.abs(a - b).mean(axis=(1, 2, 3)) / 255
        for (i, j), m in zip(part[mae <= max_mae], mae[mae <= max_mae], strict=True):
            found.append({"held_out": str(held_rows["image_id"].iat[i]),
                          "split": str(held_rows["split"].iat[i]),
                          "train": str(train_rows["image_id"].iat[j]),
                          "mean_abs_difference": round(float(m), 4)})
    return {
        "images": int(len(table)),
        "lesions_in_several_splits": int((shared > 1).sum()),
        "non_real_in_val_test": int((table.loc[held_out, "source"] != "real").sum()),
        "near_duplicate_pairs_train_vs_val_test": len(found),
        "near_duplicate_rule": f"dHash within {max_bits} bits and mean abs pixel difference "
                               f"<= {max_mae}",
        "near_duplicates": found,
    }
