"""The baseline and attention stages on the demo DAG."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from dermflow.labels import CLASSES

pytestmark = pytest.mark.workflow


def test_baseline_beats_chance_on_test_split(demo_run):
    metrics = json.loads((demo_run / "results/baseline/metrics.json").read_text())
    assert metrics["test"]["balanced_accuracy"] > 1 / len(CLASSES) + 0.15
    history = pd.read_csv(demo_run / "results/baseline/history.csv")
    assert len(history) >= 1 and history["images_per_s"].gt(0).all()
    assert metrics["best_epoch"] == int(history["val_macro_f1"].idxmax()) + 1
    saved = torch.load(demo_run / "results/baseline/model.pt", weights_only=True)
    assert saved["architecture"] == "resnetv2_50" and saved["settings"]["pretrained"] is False
    assert not (demo_run / "results/checkpoints/train_baseline/last.pt").exists()


def test_attention_maps_cover_the_training_pool(demo_run):
    maps = np.load(demo_run / "results/attention/attention.npy", mmap_mode="r")
    index = pd.read_csv(demo_run / "results/attention/index.csv")
    cache_index = pd.read_csv(next((demo_run / "results/cache").glob("index_*.csv")))
    split = pd.read_csv(demo_run / "results/split/split.csv").set_index("image_id")["split"]
    assert maps.dtype == np.float16 and maps.shape[0] == len(cache_index)
    assert list(index["image_id"]) == list(cache_index["image_id"])
    pool = index["in_pool"].to_numpy()
    assert (split[index["image_id"]].to_numpy() == "train").tolist() == pool.tolist()
    peaks = maps.reshape(len(maps), -1).max(1).astype(float)
    assert np.allclose(peaks[pool], 1) and (peaks[~pool] == 0).all()
    assert maps.min() >= 0
    assert (demo_run / "results/attention/attention_overlays.png").stat().st_size > 0


GPU_LOGS = ("train_baseline", "extract_attention", "train_gan", "generate_synthetic",
            "check_synthetic", "train_classifier_*", "predict_*")
DEVICE_LINES = ("no GPU: running on the CPU", "claimed GPU", "set by the scheduler")


def test_gpu_rules_log_their_device(demo_run):
    logs = [log for pattern in GPU_LOGS for log in (demo_run / "logs").glob(f"{pattern}.log")]
    assert len(logs) >= len(GPU_LOGS)
    for log in logs:
        assert any(line in log.read_text() for line in DEVICE_LINES), log.name
