"""The ISIC 2018 Task 3 ground truth and the demo's stand-in for that test set."""

from __future__ import annotations

import zipfile

import pandas as pd
import pytest

from dermflow.data.demo import make_external_test
from dermflow.data.isic2018 import GROUND_TRUTH, IMAGES, ground_truth_metadata
from dermflow.errors import DatasetError


def test_one_hot_ground_truth_becomes_metadata(tmp_path):
    path = tmp_path / GROUND_TRUTH
    pd.DataFrame({"image": ["ISIC_1", "ISIC_2"], "MEL": [1.0, 0.0], "NV": [0.0, 0.0],
                  "BCC": [0.0, 0.0], "AKIEC": [0.0, 0.0], "BKL": [0.0, 0.0], "DF": [0.0, 1.0],
                  "VASC": [0.0, 0.0]}).to_csv(path, index=False)
    meta = ground_truth_metadata(path)
    assert meta["dx"].tolist() == ["mel", "df"]
    assert meta["image_id"].tolist() == meta["lesion_id"].tolist() == ["ISIC_1", "ISIC_2"]


@pytest.mark.parametrize(("change", "message"), [
    ({"DF": [0.0, 1.0]}, "not one-hot: ISIC_2$"),
    ({"VASC": None}, "lacks column"),
])
def test_bad_ground_truth_is_named(tmp_path, change, message):
    table = pd.DataFrame({"image": ["ISIC_1", "ISIC_2"], "MEL": [1.0, 0.0], "NV": [0.0, 1.0],
                          "BCC": 0.0, "AKIEC": 0.0, "BKL": 0.0, "DF": [0.0, 0.0], "VASC": 0.0})
    for column, values in change.items():
        if values is None:
            table = table.drop(columns=column)
        else:
            table[column] = values
    table.to_csv(tmp_path / GROUND_TRUTH, index=False)
    with pytest.raises(DatasetError, match=message):
        ground_truth_metadata(tmp_path / GROUND_TRUTH)


def test_demo_external_set_has_the_published_layout(tmp_path):
    table = make_external_test(tmp_path, n_images=100, width=40, height=30, seed=3)
    members = zipfile.ZipFile(tmp_path / f"{IMAGES}.zip").namelist()
    assert members == [f"{IMAGES}/{image}.jpg" for image in table["image"]]
    meta = ground_truth_metadata(tmp_path / GROUND_TRUTH)
    assert meta["dx"].nunique() == 7 and len(meta) == len(table) >= 100
