"""The published layout of the ISIC 2018 Task 3 test set (the external test set).

Images in ``ISIC2018_Task3_Test_Images.zip`` (or that folder); ground truth as a
one-hot table ``image, MEL, NV, BCC, AKIEC, BKL, DF, VASC``. Kept apart from
external.py so the demo, which writes this layout, does not depend on hair
removal or validation code.
"""

from __future__ import annotations

import os

import numpy as np
import pandas as pd

from dermflow.errors import DatasetError

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
