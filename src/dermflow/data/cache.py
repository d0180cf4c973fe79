"""cache_images: every image resized once into one memory-mappable uint8 array, and reading
it back (with each image's split, or as a dataset table's images).

Training reads this N x S x S x 3 array instead of decoding JPEGs every epoch;
row i of the array is row i of the index CSV. A dataset table (build_dataset's
``dataset.csv``) points into it and into the synthetic or augmented arrays.
"""

from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
from tqdm import tqdm

from dermflow.atomic import atomic_memmap, write_csv
from dermflow.data.images import read_rgb
from dermflow.errors import DamagedFileError, DatasetError, rebuild

log = logging.getLogger(__name__)

INDEX_COLUMNS = ("row", "image_id", "lesion_id", "dx", "label")
# the rules that write the arrays a dataset table points into, besides the cache
EXTRA_ARRAYS = {"synthetic": "generate_synthetic", "augmented": "build_augmented_dataset"}


def resize_square(image: np.ndarray, size: int) -> np.ndarray:
    """size x size x 3 uint8 (area interpolation: no aliasing when shrinking)."""
    interp = cv2.INTER_AREA if max(image.shape[:2]) >= size else cv2.INTER_CUBIC
    return cv2.resize(image, (size, size), interpolation=interp)


def load_resized(ref: str, size: int) -> np.ndarray:
    """One image file as the cache holds it."""
    return resize_square(read_rgb(ref), size)


def build_cache(images: pd.DataFrame, size: int, out_npy: str | os.PathLike[str],
                out_index: str | os.PathLike[str], threads: int = 1) -> pd.DataFrame:
    """Write the image cache and its index; ``images`` has image_id, lesion_id, dx, label, path.

    The array is filled in place through a memmap, so memory stays flat whatever N is;
    its whole size is reserved on disk before the first image is read, so a full disk
    stops the job at once with a DiskFullError naming the bytes (atomic_memmap).
    """
    table = images.sort_values("image_id", kind="stable").reset_index(drop=True)
    cv2.setNumThreads(1)
    with (atomic_memmap(out_npy, np.uint8, (len(table), size, size, 3)) as cache,
          ThreadPoolExecutor(max(1, threads)) as pool):
        resized = pool.map(load_resized, table["path"], [size] * len(table))
        for row, image in enumerate(tqdm(resized, total=len(table), desc="cache", unit="img",
                                         mininterval=2)):
            cache[row] = image
    index = table.assign(row=np.arange(len(table)))[list(INDEX_COLUMNS)]
    write_csv(index, out_index)
    log.info("cached %d images at %dx%d into %s", len(table), size, size, Path(out_npy))
    return index


def read_array(npy: str | os.PathLike[str], *, rule: str) -> np.ndarray:
    """An image array ``rule`` wrote, memory-mapped read-only; DamagedFileError naming the
    file and the rule that rebuilds it when it is truncated or not a .npy array (pickled
    objects are never loaded)."""
    try:
        array = np.load(npy, mmap_mode="r")
    except (ValueError, EOFError) as err:  # numpy's words for a short or foreign file
        raise DamagedFileError(npy, f"truncated or not a .npy array ({err})", rebuild(rule)
                               ) from err
    if not isinstance(array, np.ndarray):  # a zip: np.load opens it as an .npz archive
        array.close()
        raise DamagedFileError(npy, "an .npz archive, not a .npy array", rebuild(rule))
    return array


def load_cache(npy: str | os.PathLike[str], index: str | os.PathLike[str],
               ) -> tuple[np.ndarray, pd.DataFrame]:
    """The cache (memory-mapped, read-only) and its index, row for row."""
    images, table = read_array(npy, rule="cache_images"), pd.read_csv(index)
    if len(images) != len(table):
        raise DamagedFileError(npy, f"{len(images)} images, but its index {index} lists "
                               f"{len(table)}", rebuild("cache_images"))
    return images, table


def cache_source(manifest: pd.DataFrame, hair: pd.DataFrame | None) -> pd.DataFrame:
    """The manifest with ``path`` pointing at the hair-free images when there are some."""
    if hair is None:
        return manifest
    merged = manifest.drop(columns="path").merge(
        hair[["image_id", "clean_path"]], on="image_id", how="left", validate="one_to_one")
    missing = merged.loc[merged["clean_path"].isna(), "image_id"]
    if len(missing):
        raise DatasetError(f"no hair-free image for {', '.join(missing[:10])}")
    return merged.rename(columns={"clean_path": "path"})


def load_split_cache(cache_npy: str | os.PathLike[str], index_csv: str | os.PathLike[str],
                     split_csv: str | os.PathLike[str]) -> tuple[np.ndarray, pd.DataFrame]:
    """The image cache and its index with each row's split."""
    images, index = load_cache(cache_npy, index_csv)
    split = pd.read_csv(split_csv)[["image_id", "split"]]
    index = index.merge(split, on="image_id", how="left", validate="one_to_one")
    if index["split"].isna().any():
        missing = index.loc[index["split"].isna(), "image_id"].head(5).tolist()
        raise DatasetError(f"{split_csv} has no split for cached images {missing}")
    return images, index


def load_dataset(dataset_csv: str | os.PathLike[str], cache_npy: str | os.PathLike[str],
                 extra_npy: str | os.PathLike[str] | None = None,
                 ) -> tuple[np.ndarray, pd.DataFrame]:
    """All images of a dataset in one array (cache rows first) and its table with ``pos``."""
    table = pd.read_csv(dataset_csv)
    cache = read_array(cache_npy, rule="cache_images")
    arrays = [np.asarray(cache)]
    offset = {"cache": 0}
    if extra_npy is not None:
        kind = "augmented" if (table["array"] == "augmented").any() else "synthetic"
        extra = read_array(extra_npy, rule=EXTRA_ARRAYS[kind])
        arrays.append(np.asarray(extra))
        offset.update({name: len(cache) for name in ("synthetic", "augmented")})
    unknown = set(table["array"]) - set(offset)
    if unknown:
        raise DatasetError(f"{dataset_csv} points into {sorted(unknown)}, which were not given")
    table["pos"] = table["array"].map(offset) + table["row"]
    images = np.concatenate(arrays) if len(arrays) > 1 else arrays[0]
    return images, table
