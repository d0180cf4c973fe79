"""build_dataset's ``oversample`` control: real train images repeated to the synthesis plan's
per-class counts, in train only, so what synthetic images add can be told from mere counts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from dermflow.evaluation.leakage import leakage_audit
from dermflow.experiments.datasets import build_dataset
from dermflow.gan.plan import plan, synthetic_counts
from dermflow.labels import CLASSES

SPLIT = {"train": 0.7, "val": 0.2, "test": 0.1, "seed": 3}
SYNTHESIS = {"counts": None, "reference_images": 10015,
             "targets": {"bkl": 3600, "nv": 6800, "df": 2500, "mel": 3600, "vasc": 2500,
                         "bcc": 2500, "akiec": 2500}}


def write_cache(root: Path) -> tuple[str, str, str, pd.DataFrame]:
    """A 140-image cache (HAM10000's class imbalance, two images per lesion) with a split."""
    per_class = {"nv": 60, "mel": 20, "bkl": 20, "bcc": 12, "akiec": 12, "vasc": 8, "df": 8}
    dx = np.concatenate([[c] * n for c, n in per_class.items()])
    rng = np.random.default_rng(0)
    index = pd.DataFrame({"row": np.arange(len(dx)), "image_id": [f"ISIC_{i:07d}" for i in
                                                                  range(len(dx))],
                          "lesion_id": [f"HAM_{i // 2:07d}" for i in range(len(dx))], "dx": dx,
                          "label": [CLASSES.index(d) for d in dx]})
    split = index[["image_id", "lesion_id", "dx"]].assign(
        split=np.where(np.arange(len(dx)) % 10 < 6, "train",
                       np.where(np.arange(len(dx)) % 10 < 8, "val", "test")))
    np.save(root / "cache.npy", rng.integers(0, 256, (len(dx), 8, 8, 3), dtype=np.uint8))
    index.to_csv(root / "index.csv", index=False)
    split.to_csv(root / "split.csv", index=False)
    return str(root / "cache.npy"), str(root / "index.csv"), str(root / "split.csv"), index


@pytest.mark.parametrize("protocol", ["grouped", "paper"])
def test_oversample_reaches_the_plans_counts_with_train_images_only(tmp_path, protocol):
    cache, index_csv, split_csv, index = write_cache(tmp_path)
    table = build_dataset("oversample", cache, index_csv, split_csv, protocol=protocol,
                          split_settings=SPLIT, seed=5, out_csv=tmp_path / "dataset.csv",
                          synthesis=SYNTHESIS)
    split = pd.read_csv(split_csv).set_index("image_id")["split"]
    train_real = index[split.loc[index["image_id"]].to_numpy() == "train"]
    counts = synthetic_counts(train_real["dx"].value_counts().to_dict(), SYNTHESIS)
    repeats = table[table["source"] == "repeat"]
    assert sum(counts.values()) > len(train_real)  # the plan more than doubles the pool
    assert repeats["dx"].value_counts().to_dict() == {dx: n for dx, n in counts.items() if n}
    assert set(repeats["split"]) == {"train"}
    sources = index.set_index("row").loc[repeats["row"]]
    assert set(sources["image_id"]) <= set(train_real["image_id"])  # train-split images only
    assert (sources["dx"].to_numpy() == repeats["dx"].to_numpy()).all()
    assert (sources["lesion_id"].to_numpy() == repeats["lesion_id"].to_numpy()).all()
    assert (repeats["array"] == "cache").all() and repeats["image_id"].is_unique
    real = table[table["source"] == "real"]
    assert sorted(real["image_id"]) == sorted(index["image_id"])  # every real image, once
    assert (real.set_index("image_id")["split"] == split.loc[real["image_id"]]).all()
    per_class = repeats["dx"].value_counts()
    uses = repeats.groupby("row").size()
    for dx in per_class.index:  # round-robin: a class's images repeat equally often, +-1
        rows = train_real.loc[train_real["dx"] == dx, "row"]
        times = uses.reindex(rows, fill_value=0)
        assert times.max() - times.min() <= 1, dx
    audit = leakage_audit(str(tmp_path / "dataset.csv"), cache, None, max_bits=0, max_mae=0.0)
    assert audit["non_real_in_val_test"] == 0 and audit["lesions_in_several_splits"] == 0
    assert audit["near_duplicate_pairs_train_vs_val_test"] == 0  # the repeats stay in train


def test_grouped_repeats_are_the_generators_sources(tmp_path):
    """Under grouped with the run's seed, repeat k is the real image synthetic image k edits:
    the two datasets differ in what the extra images are, not in which images they came from."""
    cache, index_csv, split_csv, index = write_cache(tmp_path)
    table = build_dataset("oversample", cache, index_csv, split_csv, protocol="grouped",
                          split_settings=SPLIT, seed=5, out_csv=tmp_path / "dataset.csv",
                          synthesis=SYNTHESIS)
    split = pd.read_csv(split_csv)["split"]
    pool = index[(split == "train").to_numpy()]
    manifest = plan(pool, synthetic_counts(pool["dx"].value_counts().to_dict(), SYNTHESIS), 5)
    repeats = table[table["source"] == "repeat"]
    assert repeats["row"].tolist() == manifest["source_row"].tolist()
