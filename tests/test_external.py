"""The ISIC 2018 Task 3 ground truth and the demo's stand-in for that test set."""

from __future__ import annotations

import zipfile

import pandas as pd
import pytest

from dermflow.data.demo import make_external_test
from dermflow.data.external import prepare_external
from dermflow.data.isic2018 import GROUND_TRUTH, GROUND_TRUTH_TAB, IMAGES, ground_truth_metadata
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


METADATA_ROWS = ("lesion_id\timage_id\tdx\tdx_type\tage\tsex\tlocalization\tdataset\n"
                 "HAM_0000001\tISIC_1\tmel\thisto\t50.0\tmale\tback\trosendahl\n"
                 "HAM_0000001\tISIC_2\tmel\thisto\t50.0\tmale\tback\trosendahl\n"
                 "\tISIC_3\tnv\tfollow_up\t30.0\tfemale\tface\tvidir_modern\n")


@pytest.mark.parametrize("name", [GROUND_TRUTH_TAB, GROUND_TRUTH])
def test_metadata_layout_ground_truth_keeps_its_lesions(tmp_path, name):
    (tmp_path / name).write_text(METADATA_ROWS)  # tab-separated, whatever the suffix
    meta = ground_truth_metadata(tmp_path / name)
    assert list(meta.columns[:3]) == ["lesion_id", "image_id", "dx"]
    assert meta["lesion_id"].tolist() == ["HAM_0000001", "HAM_0000001", "ISIC_3"]
    assert meta["dx"].tolist() == ["mel", "mel", "nv"]
    assert meta["dataset"].tolist() == ["rosendahl", "rosendahl", "vidir_modern"]


def test_ground_truth_in_no_known_layout_is_named(tmp_path):
    (tmp_path / GROUND_TRUTH).write_text("name,label\nISIC_1,mel\n")
    with pytest.raises(DatasetError, match="neither layout.*found name, label"):
        ground_truth_metadata(tmp_path / GROUND_TRUTH)


@pytest.mark.parametrize(("layout", "truth"), [("onehot", GROUND_TRUTH),
                                               ("metadata", GROUND_TRUTH_TAB)])
def test_demo_external_set_in_either_layout_with_a_missing_image(tmp_path, layout, truth, caplog):
    table = make_external_test(tmp_path, n_images=100, width=40, height=30, seed=3,
                               layout=layout, missing=1)
    ids = table["image" if layout == "onehot" else "image_id"].tolist()
    members = zipfile.ZipFile(tmp_path / f"{IMAGES}.zip").namelist()
    assert members == [f"{IMAGES}/{image}.jpg" for image in ids[:-1]]
    meta = ground_truth_metadata(tmp_path / truth)
    assert meta["image_id"].tolist() == ids and meta["dx"].nunique() == 7
    if layout == "metadata":
        assert meta["lesion_id"].str.fullmatch(r"HAM_\d{7}").all()
        assert meta["lesion_id"].nunique() < len(meta)  # lesions with several images

    index = prepare_external(tmp_path / truth, [tmp_path / f"{IMAGES}.zip"], hair=None,
                             size=16, on_bad_input="fail", threads=1, hair_dir=tmp_path / "work",
                             out_npy=tmp_path / "x.npy", out_index=tmp_path / "x.csv",
                             out_quarantine=tmp_path / "quarantine.csv")
    assert len(index) == 99
    quarantine = pd.read_csv(tmp_path / "quarantine.csv")
    assert quarantine["image_id"].tolist() == [ids[-1]]
    assert quarantine["problem"].tolist() == ["missing_file"]
    assert "1 ground-truth row(s) without an image" in caplog.text
