"""The image cache: one memory-mappable uint8 array aligned row-for-row with its index."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from dermflow.data.cache import build_cache, cache_source, load_cache, load_resized
from dermflow.data.validate import image_sources, validate_dataset
from dermflow.errors import DatasetError


@pytest.fixture
def manifest(tiny_dataset):
    table, _ = validate_dataset(tiny_dataset / "HAM10000_metadata.csv", image_sources(tiny_dataset))
    return table.sample(frac=1, random_state=0)  # order must not matter


def test_cache_rows_match_index(manifest, tmp_path):
    index = build_cache(manifest, 24, tmp_path / "c.npy", tmp_path / "c.csv", threads=2)
    cache, index_read = load_cache(tmp_path / "c.npy", tmp_path / "c.csv")
    assert cache.shape == (len(manifest), 24, 24, 3) and cache.dtype == np.uint8
    assert isinstance(cache, np.memmap)
    pd.testing.assert_frame_equal(index, index_read)
    assert list(index["image_id"]) == sorted(manifest["image_id"])
    for row in (0, 17, len(index) - 1):
        path = manifest.set_index("image_id").at[index.at[row, "image_id"], "path"]
        np.testing.assert_array_equal(cache[row], load_resized(path, 24))


def test_cache_is_identical_across_thread_counts(manifest, tmp_path):
    build_cache(manifest, 16, tmp_path / "a.npy", tmp_path / "a.csv", threads=1)
    build_cache(manifest, 16, tmp_path / "b.npy", tmp_path / "b.csv", threads=2)
    assert (tmp_path / "a.npy").read_bytes() == (tmp_path / "b.npy").read_bytes()
    assert not list(tmp_path.glob(".*.tmp")), "no temp file is left behind"


def test_cache_source_uses_hair_free_images(manifest):
    hair = pd.DataFrame({"image_id": manifest["image_id"],
                         "clean_path": "clean/" + manifest["image_id"] + ".png"})
    source = cache_source(manifest, hair)
    assert (source["path"] == "clean/" + source["image_id"] + ".png").all()
    assert cache_source(manifest, None) is manifest
    with pytest.raises(DatasetError, match="no hair-free image"):
        cache_source(manifest, hair.iloc[1:])
