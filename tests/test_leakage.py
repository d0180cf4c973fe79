"""The leakage audit's hashing reads a dataset's rows one image at a time."""

from __future__ import annotations

import numpy as np

from dermflow.evaluation.leakage import dhash


def test_hashing_rows_in_place_equals_hashing_the_gathered_images():
    """The audit hashes ``images[positions]`` without gathering them (a second copy of every
    dataset, 3 GB for the paper's synthetic one): the same hashes, repeats and order kept."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (12, 32, 32, 3), dtype=np.uint8)
    positions = np.array([11, 0, 5, 5, 3, 0, 7])
    assert dhash(images, positions).tolist() == dhash(images[positions]).tolist()
    assert len(set(dhash(images).tolist())) == 12
