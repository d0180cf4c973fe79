"""build_dataset's ``oversample`` control: real train images repeated, in train only, as many
per class as a generator dataset's train split gets synthetic images, so what synthetic
images add can be told from mere counts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import REPO

from dermflow.config import load_config
from dermflow.data.split import pool_split, split_fractions
from dermflow.evaluation.leakage import leakage_audit
from dermflow.experiments.datasets import build_dataset
from dermflow.gan.networks import build_networks
from dermflow.gan.synthesis import generate_synthetic
from dermflow.labels import CLASSES

SPLIT = {"train": 0.7, "val": 0.2, "test": 0.1, "seed": 3}
SYNTHESIS = {"counts": None, "reference_images": 10015,
             "targets": {"bkl": 3600, "nv": 6800, "df": 2500, "mel": 3600, "vasc": 2500,
                         "bcc": 2500, "akiec": 2500},
             "batch_size": 64, "select": {"enabled": False, "candidates": 2.0, "diversity": 1.0}}
COUNTS = {**SYNTHESIS, "counts": {"df": 30, "vasc": 20, "mel": 9}}
TINY_CGAN = {"kind": "cgan", "latent_dim": 4, "embed_dim": 2, "channels": 4, "depth": 1,
             "res_blocks": 1, "critic_channels": 4, "critic_depth": 1}


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


def synthesize(root: Path, cache: str, index_csv: str, split_csv: str, protocol: str,
               synthesis: dict) -> str:
    """The manifest generate_synthetic writes, from a tiny untrained C'GAN (what is compared
    here is the manifest's counts and sources, not the images)."""
    settings = {**load_config(REPO / "config.yaml")["gan"], **TINY_CGAN}
    generator, critic = build_networks(settings, 8)
    torch.save({"state_dict": generator.state_dict(), "critic": critic.state_dict(),
                "settings": settings, "image_size": 8, "kind": "cgan"}, root / "generator.pt")
    np.save(root / "attention.npy", np.full((len(pd.read_csv(index_csv)), 8, 8), 0.5, np.float16))
    generate_synthetic(str(root / "generator.pt"), cache, index_csv, split_csv,
                       str(root / "attention.npy"), protocol=protocol, settings=synthesis,
                       device=torch.device("cpu"), seed=5, precision="fp32",
                       out_npy=str(root / "synthetic.npy"),
                       out_manifest=str(root / "manifest.csv"),
                       out_figure=str(root / "examples.png"))
    return str(root / "manifest.csv")


def generator_dataset(root: Path, cache: str, index_csv: str, split_csv: str, manifest: str,
                      protocol: str, folds: int, fold: int) -> pd.DataFrame:
    """The cgan dataset as split_pool and build_dataset make it from that manifest."""
    pd.DataFrame(pool_split(pd.read_csv(split_csv), pd.read_csv(manifest), protocol,
                            split_fractions(SPLIT), SPLIT["seed"],
                            folds=folds, fold=fold)).to_csv(root / "pool.csv", index=False)
    return build_dataset("cgan", cache, index_csv, split_csv, protocol=protocol,
                         split_settings=SPLIT, seed=5, out_csv=root / "cgan.csv",
                         synthetic_manifest=manifest, synthetic_split=str(root / "pool.csv"),
                         folds=folds, fold=fold)


@pytest.mark.parametrize(("protocol", "synthesis"), [("grouped", SYNTHESIS), ("paper", SYNTHESIS),
                                                     ("paper", COUNTS)],
                         ids=["grouped", "paper-targets", "paper-counts"])
def test_oversample_matches_the_generator_datasets_train_counts_with_train_images_only(
        tmp_path, protocol, synthesis):
    """Under paper the generator's images are pooled and split 70:20:10, so only the train
    share counts, with targets and with explicit counts alike; under cross-validation too."""
    cache, index_csv, split_csv, index = write_cache(tmp_path)
    manifest = synthesize(tmp_path, cache, index_csv, split_csv, protocol, synthesis)
    for folds, fold in ((1, 0), (3, 1)) if protocol == "paper" else ((1, 0),):
        cgan = generator_dataset(tmp_path, cache, index_csv, split_csv, manifest, protocol,
                                 folds, fold)
        table = build_dataset("oversample", cache, index_csv, split_csv, protocol=protocol,
                              split_settings=SPLIT, seed=5, out_csv=tmp_path / "dataset.csv",
                              synthesis=synthesis, folds=folds, fold=fold)
        synthetic = cgan[(cgan["source"] == "synthetic") & (cgan["split"] == "train")]
        repeats = table[table["source"] == "repeat"]
        assert len(synthetic) < len(pd.read_csv(manifest)) or protocol == "grouped"
        assert repeats["dx"].value_counts().to_dict() == synthetic["dx"].value_counts().to_dict()
    split = pd.read_csv(split_csv).set_index("image_id")["split"]
    train_real = index[split.loc[index["image_id"]].to_numpy() == "train"]
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
    cache, index_csv, split_csv, _ = write_cache(tmp_path)
    manifest = pd.read_csv(synthesize(tmp_path, cache, index_csv, split_csv, "grouped",
                                      SYNTHESIS))
    table = build_dataset("oversample", cache, index_csv, split_csv, protocol="grouped",
                          split_settings=SPLIT, seed=5, out_csv=tmp_path / "dataset.csv",
                          synthesis=SYNTHESIS)
    repeats = table[table["source"] == "repeat"]
    assert len(repeats) == len(manifest) > 0
    assert repeats["row"].tolist() == manifest["source_row"].tolist()
    assert repeats["dx"].tolist() == manifest["dx"].tolist()
