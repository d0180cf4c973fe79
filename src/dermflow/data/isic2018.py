"""The published layouts of the ISIC 2018 Task 3 test set (the external test set).

Images in ``ISIC2018_Task3_Test_Images.zip`` (or that folder). Ground truth in
either of two layouts, told apart by their columns:

- the challenge's one-hot table ``image, MEL, NV, BCC, AKIEC, BKL, DF, VASC``
  (``ISIC2018_Task3_Test_GroundTruth.csv``);
- the HAM10000 Dataverse record's ``ISIC2018_Task3_Test_GroundTruth.tab``, laid
  out like the HAM10000 metadata: ``lesion_id, image_id, dx, dx_type, age, sex,
  localization, dataset``.

Either file may be comma- or tab-separated, whatever its suffix (the header line
decides). Kept apart from external.py so the demo, which writes these layouts,
does not depend on hair removal or validation code.
"""

from __future__ import annotations

import logging
import os

import numpy as np
import pandas as pd

from dermflow.errors import DatasetError

GROUND_TRUTH = "ISIC2018_Task3_Test_GroundTruth.csv"
GROUND_TRUTH_TAB = "ISIC2018_Task3_Test_GroundTruth.tab"  # the Dataverse record's name
IMAGES = "ISIC2018_Task3_Test_Images"  # the published zip (or its unpacked folder)
ISIC_COLUMNS = {"MEL": "mel", "NV": "nv", "BCC": "bcc", "AKIEC": "akiec", "BKL": "bkl",
                "DF": "df", "VASC": "vasc"}
METADATA_COLUMNS = ("lesion_id", "image_id", "dx")

log = logging.getLogger(__name__)


def read_table(path: str | os.PathLike[str]) -> pd.DataFrame:
    """A comma- or tab-separated table, told by its header line; identifiers kept as text."""
    try:
        with open(path, encoding="utf-8-sig") as fh:
            header = fh.readline()
        sep = "\t" if "\t" in header else ","
        return pd.read_csv(path, sep=sep, encoding="utf-8-sig",
                           dtype={"image": str, "lesion_id": str, "image_id": str, "dx": str})
    except (OSError, UnicodeDecodeError, pd.errors.ParserError,
            pd.errors.EmptyDataError) as err:
        raise DatasetError(f"cannot read ground truth {path}: {err}") from err


def ground_truth_metadata(path: str | os.PathLike[str]) -> pd.DataFrame:
    """HAM10000-style metadata (lesion_id, image_id, dx, ...) from either ground-truth layout.

    The one-hot layout has no lesions, so each image is its own; the metadata layout's
    lesion_id is kept where given (the lesion-grouped bootstrap can use it), and its
    other columns pass through.
    """
    table = read_table(path)
    if "image_id" in table.columns:
        _require(table, ("image_id", "dx"), path, "HAM10000 metadata")
        return _from_metadata(table, path)
    if "image" in table.columns:
        _require(table, ("image", *ISIC_COLUMNS), path, "one-hot")
        return _from_one_hot(table, path)
    raise DatasetError(
        f"ground truth {path}: neither layout of the ISIC 2018 Task 3 ground truth; expected "
        f"columns image, {', '.join(ISIC_COLUMNS)} (one-hot) or lesion_id, image_id, dx "
        f"(HAM10000 metadata), found {', '.join(map(str, table.columns))}")


def _require(table: pd.DataFrame, columns: tuple[str, ...], path: str | os.PathLike[str],
             layout: str) -> None:
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise DatasetError(f"ground truth {path} ({layout} layout) lacks column(s) "
                           f"{', '.join(missing)}")


def _from_metadata(table: pd.DataFrame, path: str | os.PathLike[str]) -> pd.DataFrame:
    """The metadata layout as it is, lesion_id first; a row without one is its own lesion."""
    meta = table.copy()
    if "lesion_id" not in meta.columns:
        meta.insert(0, "lesion_id", pd.Series(pd.NA, index=meta.index, dtype=object))
    unnamed = meta["lesion_id"].isna() | (meta["lesion_id"].astype(str).str.strip() == "")
    if unnamed.any():
        log.info("ground truth %s: %d row(s) without lesion_id, each taken as its own lesion",
                 path, unnamed.sum())
        meta.loc[unnamed, "lesion_id"] = meta.loc[unnamed, "image_id"]
    return meta[list(METADATA_COLUMNS) + [c for c in meta.columns if c not in METADATA_COLUMNS]]


def _from_one_hot(table: pd.DataFrame, path: str | os.PathLike[str]) -> pd.DataFrame:
    """Metadata from the challenge's one-hot table; rows that are not one-hot are named."""
    onehot = table[list(ISIC_COLUMNS)].to_numpy(float)
    bad = table.loc[(onehot.max(1) != 1) | (onehot.sum(1) != 1), "image"]
    if len(bad):
        raise DatasetError(f"ground truth {path}: rows that are not one-hot: "
                           f"{', '.join(map(str, bad[:10]))}")
    dx = np.array(list(ISIC_COLUMNS.values()))[onehot.argmax(1)]
    return pd.DataFrame({"lesion_id": table["image"], "image_id": table["image"], "dx": dx})
