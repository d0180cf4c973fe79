"""The embedded demo dataset: HAM10000's layout, seeded, learnable, with hair truth."""

from __future__ import annotations

import hashlib

import cv2
import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score

from dermflow.data.demo import make_demo_dataset
from dermflow.data.images import read_mask, read_rgb
from dermflow.labels import CLASSES

N, W, H = 200, 64, 48
HAM_LOCALIZATIONS = {"abdomen", "acral", "back", "chest", "ear", "face", "foot", "genital", "hand",
                     "lower extremity", "neck", "scalp", "trunk", "unknown", "upper extremity"}


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    return root, make_demo_dataset(root, n_images=N, width=W, height=H, seed=5)


def digests(root):
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_columns_and_values_are_ham10000s(demo):
    root, meta = demo
    on_disk = pd.read_csv(root / "HAM10000_metadata.csv")
    assert list(on_disk.columns) == ["lesion_id", "image_id", "dx", "dx_type", "age", "sex",
                                     "localization"]
    pd.testing.assert_frame_equal(on_disk, meta)
    assert len(on_disk) == N and on_disk["image_id"].is_unique
    assert on_disk["lesion_id"].str.fullmatch(r"HAM_\d{7}").all()
    assert on_disk["image_id"].str.fullmatch(r"ISIC_\d{7}").all()
    assert set(on_disk["dx"]) == set(CLASSES)
    assert set(on_disk["dx_type"]) <= {"histo", "follow_up", "consensus", "confocal"}
    assert set(on_disk["sex"]) <= {"male", "female", "unknown"}
    assert set(on_disk["localization"]) <= HAM_LOCALIZATIONS
    assert on_disk["age"].dtype == float and on_disk["age"].dropna().between(0, 90).all()


def test_files_and_sizes(demo):
    root, meta = demo
    files = {p.name for p in (root / "HAM10000_images_part_1").iterdir()}
    assert files == {f"{i}.jpg" for i in meta["image_id"]}
    for image_id in meta["image_id"]:
        assert read_rgb(str(root / "HAM10000_images_part_1" / f"{image_id}.jpg")).shape == (
            H, W, 3)
        assert read_rgb(str(root / "hair_truth" / "clean" / f"{image_id}.png")).shape == (H, W, 3)
        mask = cv2.imread(str(root / "hair_truth" / "masks" / f"{image_id}.png"),
                          cv2.IMREAD_UNCHANGED)
        assert mask.shape == (H, W) and set(np.unique(mask)) <= {0, 255}


def test_lesions_and_imbalance(demo):
    _, meta = demo
    per_lesion = meta.groupby("lesion_id").agg(n=("image_id", "size"), dx=("dx", "nunique"),
                                               sex=("sex", "nunique"))
    assert per_lesion["n"].between(1, 6).all() and (per_lesion["dx"] == 1).all()
    assert (per_lesion["sex"] == 1).all()  # one patient per lesion
    assert (per_lesion["n"] > 1).sum() >= 10
    assert (meta.groupby("dx")["lesion_id"].nunique() >= 6).all()
    counts = meta["dx"].value_counts()
    assert (counts >= 12).all()
    assert counts.idxmax() == "nv" and counts["nv"] > 3 * counts["mel"]
    assert counts["mel"] > counts["df"]  # the imbalance is scaled down, not flattened


def test_same_seed_same_bytes_other_seed_other_bytes(demo, tmp_path):
    root, _ = demo
    make_demo_dataset(tmp_path / "a", n_images=N, width=W, height=H, seed=5)
    assert digests(tmp_path / "a") == digests(root)
    make_demo_dataset(tmp_path / "b", n_images=N, width=W, height=H, seed=6)
    same = set(digests(tmp_path / "b").items()) & set(digests(root).items())
    assert not {name for name, _ in same if name.endswith(".jpg")}


def test_hair_truth(demo):
    root, meta = demo
    hairy = 0
    for image_id in meta["image_id"]:
        mask = read_mask(root / "hair_truth" / "masks" / f"{image_id}.png")
        clean = read_rgb(str(root / "hair_truth" / "clean" / f"{image_id}.png")).astype(float)
        image = read_rgb(str(root / "HAM10000_images_part_1" / f"{image_id}.jpg")).astype(float)
        if mask.any():  # dark, thin strands: darker than the truth, a small share of the image
            hairy += 1
            assert image[mask].mean() < 0.7 * clean[mask].mean()
            assert mask.mean() < 0.35
        # away from hair, the image is its hair-free truth up to JPEG loss
        away = ~cv2.dilate(mask.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
        assert np.abs(image[away] - clean[away]).mean() < 5
    assert 0.45 < hairy / len(meta) < 0.75


def test_classes_are_learnable_across_lesions(demo):
    root, meta = demo
    x = np.stack([cv2.resize(read_rgb(str(root / "HAM10000_images_part_1" / f"{i}.jpg")),
                             (16, 16), interpolation=cv2.INTER_AREA).ravel()
                  for i in meta["image_id"]]).astype(np.float32) / 255
    y = meta["dx"].to_numpy()
    test = meta["lesion_id"].isin(meta["lesion_id"].unique()[::3]).to_numpy()  # unseen lesions
    predicted = LogisticRegression(max_iter=3000).fit(x[~test], y[~test]).predict(x[test])
    assert balanced_accuracy_score(y[test], predicted) > 0.35  # chance: 1/7
    assert (predicted == y[test]).mean() > (y[test] == "nv").mean()  # beats always-nv


def test_too_few_images_is_refused(tmp_path):
    with pytest.raises(ValueError, match="n_images"):
        make_demo_dataset(tmp_path, n_images=50)
