"""Splits: grouped by lesion and stratified by class; the paper's split is image-level."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from dermflow.cli import main
from dermflow.data.split import (
    make_folds,
    make_split,
    pool_split,
    split_dataset,
    split_of_fold,
    split_summary,
)
from dermflow.errors import DatasetError
from dermflow.labels import CLASSES

FRACTIONS = (0.7, 0.2, 0.1)


def ham_like(seed: int = 0) -> pd.DataFrame:
    """A HAM10000-shaped table: imbalanced classes, 1-6 images per lesion."""
    rng = np.random.default_rng(seed)
    lesions = {"nv": 400, "mel": 80, "bkl": 70, "bcc": 40, "akiec": 25, "vasc": 10, "df": 8}
    rows = []
    for dx, n in lesions.items():
        for lesion in range(n):
            for _ in range(rng.integers(1, 7)):
                rows.append({"image_id": f"ISIC_{len(rows):07d}", "lesion_id": f"HAM_{dx}_{lesion}",
                             "dx": dx})
    return pd.DataFrame(rows)


def test_dermflow_split_writes_what_the_rule_writes(tmp_path):
    """``dermflow split`` and rule split_dataset run the same stage on the same settings."""
    manifest = tmp_path / "manifest.csv"
    ham_like().to_csv(manifest, index=False)
    settings = {"train": 0.6, "val": 0.25, "test": 0.15, "seed": 5}  # the config's split
    split_dataset(manifest, "paper", settings, out_split=tmp_path / "rule" / "split.csv",
                  out_summary=tmp_path / "rule" / "summary.json")
    assert main(["split", str(manifest), str(tmp_path / "cli"), "--protocol", "paper",
                 "--seed", "5", "--train", "0.6", "--val", "0.25", "--test", "0.15"]) == 0
    for name in ("split.csv", "summary.json"):
        assert (tmp_path / "cli" / name).read_bytes() == (tmp_path / "rule" / name).read_bytes()
    expected = make_split(ham_like(), "paper", (0.6, 0.25, 0.15), seed=5)
    assert pd.read_csv(tmp_path / "rule" / "split.csv").equals(expected)


def test_grouped_keeps_lesions_together_and_classes_everywhere():
    split = make_split(ham_like(), "grouped", FRACTIONS, seed=1)
    assert split.groupby("lesion_id")["split"].nunique().max() == 1
    summary = split_summary(split)
    assert summary["lesions_in_several_splits"] == 0
    for dx in CLASSES:
        for name, target in zip(("train", "val", "test"), FRACTIONS, strict=True):
            assert summary["images"][dx][name] > 0
            if dx in ("nv", "mel", "bkl"):  # big classes land within a few points of the target
                assert abs(summary["fractions"][dx][name] - target) < 0.03


def test_same_seed_same_split_other_seed_other_split():
    table = ham_like()
    a = make_split(table, "grouped", FRACTIONS, seed=3)
    b = make_split(table.sample(frac=1, random_state=0), "grouped", FRACTIONS, seed=3)
    c = make_split(table, "grouped", FRACTIONS, seed=4)
    pd.testing.assert_frame_equal(a, b)
    assert (a["split"] != c["split"]).any()


def test_paper_split_is_stratified_by_image_and_leaks_lesions():
    split = make_split(ham_like(), "paper", FRACTIONS, seed=1)
    summary = split_summary(split)
    assert summary["fractions"]["nv"]["test"] == pytest.approx(0.1, abs=0.01)
    assert summary["lesions_in_several_splits"] > 0


def test_class_with_too_few_lesions_is_named():
    table = ham_like()
    table = table[~((table["dx"] == "df") & (table["lesion_id"] > "HAM_df_1"))]
    with pytest.raises(DatasetError, match="class df has 2 lesion"):
        make_split(table, "grouped", FRACTIONS, seed=0)


def synthetic_for(split: pd.DataFrame, n: int) -> pd.DataFrame:
    """A generate_synthetic manifest drawing sources from the train split."""
    sources = split[split["split"] == "train"].sample(n, replace=True, random_state=0)
    return pd.DataFrame({"synthetic_id": [f"SYN_{i:07d}" for i in range(n)],
                         "lesion_id": sources["lesion_id"].to_numpy(),
                         "dx": sources["dx"].to_numpy(),
                         "source_image_id": sources["image_id"].to_numpy()})


def test_grouped_pool_puts_synthetic_images_in_train_only():
    split = make_split(ham_like(), "grouped", FRACTIONS, seed=1)
    pooled = pool_split(split, synthetic_for(split, 300), "grouped", FRACTIONS, seed=1)
    synthetic = pooled[pooled["source"] == "synthetic"]
    assert len(synthetic) == 300 and (synthetic["split"] == "train").all()
    real = pooled[pooled["source"] == "real"].set_index("image_id")["split"]
    assert real.equals(split.set_index("image_id")["split"])


def test_paper_pool_splits_real_and_synthetic_together():
    split = make_split(ham_like(), "paper", FRACTIONS, seed=1)
    pooled = pool_split(split, synthetic_for(split, 600), "paper", FRACTIONS, seed=1)
    assert len(pooled) == len(split) + 600
    shares = pooled["split"].value_counts(normalize=True)
    assert shares["train"] == pytest.approx(0.7, abs=0.01)
    synthetic = pooled[pooled["source"] == "synthetic"]
    assert (synthetic["split"] != "train").sum() > 100  # the leak the paper's protocol has
    assert split_summary(pooled)["lesions_in_several_splits"] > 0


@pytest.mark.parametrize("protocol", ["grouped", "paper"])
def test_folds_hold_out_the_same_test_split_and_cover_the_rest_once(protocol):
    table = ham_like()
    split = make_split(table, protocol, FRACTIONS, seed=2)
    folds = make_folds(table, protocol, FRACTIONS, seed=2, folds=3)
    assert folds.set_index("image_id")["fold"].eq("test").equals(
        split.set_index("image_id")["split"].eq("test"))  # the same test split as today
    vals = [split_of_fold(folds, f) for f in range(3)]
    val_ids = [set(s.loc[s["split"] == "val", "image_id"]) for s in vals]
    rest = set(folds.loc[folds["fold"] != "test", "image_id"])
    assert set.union(*val_ids) == rest and sum(map(len, val_ids)) == len(rest)  # once each
    for s in vals:
        assert set(s.loc[s["split"] == "test", "image_id"]) == set(
            folds.loc[folds["fold"] == "test", "image_id"])
        for name in ("train", "val"):
            assert set(s.loc[s["split"] == name, "dx"]) == set(CLASSES)  # class-complete
    if protocol == "grouped":
        assert folds.groupby("lesion_id")["fold"].nunique().max() == 1  # no lesion in two folds
        sizes = folds["fold"].value_counts()
        assert sizes.drop("test").max() / sizes.drop("test").min() < 1.1
    else:
        assert folds.groupby("lesion_id")["fold"].nunique().max() > 1  # the paper's leak


def test_a_class_with_fewer_lesions_than_folds_is_named():
    with pytest.raises(DatasetError, match="class df has .* cv.folds: 20 needs at least 20"):
        make_folds(ham_like(), "grouped", FRACTIONS, seed=0, folds=20)


def test_paper_pool_folds_deal_real_and_synthetic_images_together():
    folds = make_folds(ham_like(), "paper", FRACTIONS, seed=1, folds=3)
    split = split_of_fold(folds, 0)
    manifest = synthetic_for(split, 600)
    pools = [pool_split(split, manifest, "paper", FRACTIONS, seed=1, folds=3, fold=f)
             for f in range(3)]
    tests = [set(p.loc[p["split"] == "test", "image_id"]) for p in pools]
    assert tests[0] == tests[1] == tests[2]  # one held-out test part for every fold
    vals = [set(p.loc[p["split"] == "val", "image_id"]) for p in pools]
    assert not vals[0] & vals[1] and len(set.union(*vals)) == len(pools[0]) - len(tests[0])
    assert (pools[0].loc[pools[0]["split"] == "val", "source"] == "synthetic").any()


@pytest.mark.parametrize("protocol", ["grouped", "paper"])
def test_class_without_images_is_named_under_both_protocols(protocol):
    table = ham_like()
    with pytest.raises(DatasetError, match=r"class\(es\) vasc: 0 images in the manifest"):
        make_split(table[table["dx"] != "vasc"], protocol, FRACTIONS, seed=0)


def test_paper_split_names_a_class_without_test_images():
    table = ham_like()
    vasc = table.index[table["dx"] == "vasc"]
    table = table.drop(vasc[4:])  # 4 images: stratification leaves the test split none
    with pytest.raises(DatasetError, match=r"paper split: .*vasc: 4 image\(s\), .* 0 test"):
        make_split(table, "paper", FRACTIONS, seed=0)


def test_paper_split_of_too_few_images_is_a_dataset_error():
    table = ham_like().groupby("dx").head(2)
    with pytest.raises(DatasetError, match="paper split of 14 images"):
        make_split(table, "paper", FRACTIONS, seed=0)
