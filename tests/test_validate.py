"""validate_dataset: bad inputs are named, quarantined or fatal; raw data is untouched."""

from __future__ import annotations

import hashlib
import shutil
import zipfile

import pandas as pd
import pytest

from dermflow.data.validate import image_sources, validate_dataset
from dermflow.errors import DatasetError


def digest(root):
    return {p.name: hashlib.md5(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*.*"))}


def test_clean_dataset_gives_full_manifest(tiny_dataset):
    manifest, quarantine = validate_dataset(tiny_dataset / "HAM10000_metadata.csv",
                                            image_sources(tiny_dataset), "fail")
    assert len(manifest) == 42 and quarantine.empty
    assert {"image_id", "lesion_id", "dx", "label", "path", "width", "height",
            "localization"} <= set(manifest.columns)
    assert (manifest["width"] == 40).all() and (manifest["height"] == 30).all()


def test_fail_names_every_offender(broken_dataset):
    tiny_dataset, expected = broken_dataset
    with pytest.raises(DatasetError) as err:
        validate_dataset(tiny_dataset / "HAM10000_metadata.csv", image_sources(tiny_dataset),
                         "fail")
    for image_id, reason in expected.items():
        assert image_id in str(err.value)
        assert reason in str(err.value)


def test_quarantine_lists_and_leaves_out(broken_dataset):
    tiny_dataset, expected = broken_dataset
    before = digest(tiny_dataset)
    manifest, quarantine = validate_dataset(tiny_dataset / "HAM10000_metadata.csv",
                                            image_sources(tiny_dataset), "quarantine", threads=2)
    reasons = quarantine.groupby("image_id")["reason"].first()
    for image_id, reason in expected.items():
        assert reason in reasons[image_id]
        assert image_id not in set(manifest["image_id"])
    assert len(manifest) == 42 - len(expected)
    assert digest(tiny_dataset) == before, "validation must never modify the raw data"


def test_images_are_read_from_zips(tiny_dataset):
    folder = tiny_dataset / "HAM10000_images_part_1"
    with zipfile.ZipFile(tiny_dataset / "HAM10000_images_part_1.zip", "w") as zf:
        for f in sorted(folder.iterdir()):
            zf.write(f, f.name)
    shutil.rmtree(folder)
    sources = image_sources(tiny_dataset)
    assert [s.name for s in sources] == ["HAM10000_images_part_1.zip"]
    manifest, _ = validate_dataset(tiny_dataset / "HAM10000_metadata.csv", sources, "fail")
    assert len(manifest) == 42 and manifest["path"].str.contains(".zip::").all()


def test_missing_metadata_column_is_named(tiny_dataset):
    meta = pd.read_csv(tiny_dataset / "HAM10000_metadata.csv").drop(columns="lesion_id")
    meta.to_csv(tiny_dataset / "HAM10000_metadata.csv", index=False)
    with pytest.raises(DatasetError, match="lacks column.*lesion_id"):
        validate_dataset(tiny_dataset / "HAM10000_metadata.csv", image_sources(tiny_dataset))
