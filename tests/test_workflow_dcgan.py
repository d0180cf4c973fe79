"""Paper 003 through the DAG: gan.kind dcgan, its CNN with and without GAN images, and
paper 002's selection of synthetic images (usable with any generator) switched on.

The demo run's outputs are copied, so switching the generator is also a rerun test:
only the generator's stages and what depends on them run again.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import switch_demo

pytestmark = pytest.mark.workflow
DCGAN = {
    "gan": {"kind": "dcgan", "epochs": 2, "dcgan": {"channels": 8, "batch_size": 32}},
    "synthesis": {"select": {"enabled": True, "candidates": 2.0, "diversity": 1.0}},
    "experiments": [  # its 64 px CNN has a 41M-weight dense layer: one epoch on a CPU
        {"name": "dcgan_dermagan_cnn", "balance": "dcgan", "model": "dermagan_cnn",
         "overrides": {"epochs": 1}},
        {"name": "none_dermagan_cnn", "balance": "none", "model": "dermagan_cnn",
         "overrides": {"epochs": 1}}],
}


@pytest.fixture(scope="module")
def dcgan_run(demo_run: Path, tmp_path_factory) -> tuple[Path, dict[str, int]]:
    """A copy of the demo run switched to the DCGAN; returns it and the jobs it planned."""
    return switch_demo(demo_run, tmp_path_factory, "dcgan", DCGAN)


def test_switching_the_generator_reruns_only_what_depends_on_it(dcgan_run):
    _, jobs = dcgan_run
    assert jobs == {"train_gan": 1, "generate_synthetic": 1, "check_synthetic": 1,
                    "split_pool": 1, "build_dataset": 1, "train_classifier": 2, "predict": 2,
                    "evaluate": 2, "compare": 1, "report": 1, "all": 1}


def test_dcgan_images_are_selected_from_twice_as_many_candidates(dcgan_run):
    workdir, _ = dcgan_run
    manifest = pd.read_csv(workdir / "results/synthetic/manifest.csv")
    images = np.load(workdir / "results/synthetic/synthetic.npy", mmap_mode="r")
    cache = np.load(next((workdir / "results/cache").glob("images_*.npy")), mmap_mode="r")
    assert images.shape[1:] == cache.shape[1:]  # 64 px samples resized to the cache's size
    assert len(images) == len(manifest) > 0
    assert (manifest["source_row"] == -1).all()  # no source image: the DCGAN sees none
    assert manifest["realism"].notna().all()
    assert len(set(manifest["seed"])) == len(manifest)
    quality = json.loads((workdir / "results/synthetic/quality.json").read_text())
    lp = quality["lpips"]  # the same shape with LPIPS's weights or without (then with why)
    assert lp["to_source"] is None and (lp["available"] or lp["reason"])
    assert quality["memorisation"]["nearest_is_source_fraction"] is None
    assert quality["images"]["synthetic"] == len(manifest)
    history = pd.read_csv(workdir / "results/gan/history.csv")
    assert {"loss_d", "loss_g", "d_real", "d_fake"} <= set(history.columns)


def test_with_and_without_gan_images_are_both_in_the_report(dcgan_run):
    workdir, _ = dcgan_run
    with_gan = pd.read_csv(workdir / "results/datasets/dcgan/dataset.csv")
    assert (with_gan["source"] == "synthetic").sum() > 0
    assert (with_gan.loc[with_gan["split"] != "train", "source"] == "real").all()
    for name in ("dcgan_dermagan_cnn", "none_dermagan_cnn"):
        predictions = pd.read_csv(workdir / "results/experiments" / name / "predictions.csv")
        assert {"val", "test"} <= set(predictions["split"])
    table = pd.read_csv(workdir / "results/report/ablation.csv")
    assert list(table["experiment"].unique()) == ["dcgan_dermagan_cnn", "none_dermagan_cnn"]
    comparisons = pd.read_csv(workdir / "results/report/comparisons.csv")
    assert set(zip(comparisons["a"], comparisons["b"], strict=True)) == {
        ("dcgan_dermagan_cnn", "none_dermagan_cnn")}
    assert set(comparisons["split"]) == {"test", "external"}
    assert comparisons["difference"].notna().all()
    assert "dcgan_dermagan_cnn" in (workdir / "results/report/ablation.md").read_text()
