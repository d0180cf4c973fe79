"""train_baseline and extract_attention: the ResNet50V2 whose saliency conditions the C'GAN.

Both learn from, or look at, the protocol's training pool only (``grouped``:
the train split); the validation split picks the best epoch; the test split is
scored once, for the record, never for a decision.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from dermflow import models
from dermflow.atomic import atomic_path, write_csv, write_json
from dermflow.attention import plot_overlays, smoothgrad, write_attention
from dermflow.batches import ImageTensor
from dermflow.cache import load_cache
from dermflow.errors import DatasetError
from dermflow.figures import plot_history
from dermflow.labels import CLASSES
from dermflow.split import training_pool
from dermflow.train import TrainConfig, fit, predict, scores

log = logging.getLogger(__name__)


def load_split_cache(cache_npy: str | os.PathLike[str], index_csv: str | os.PathLike[str],
                     split_csv: str | os.PathLike[str]) -> tuple[np.ndarray, pd.DataFrame]:
    """The image cache and its index with each row's split."""
    images, index = load_cache(cache_npy, index_csv)
    split = pd.read_csv(split_csv)[["image_id", "split"]]
    index = index.merge(split, on="image_id", how="left", validate="one_to_one")
    if index["split"].isna().any():
        missing = index.loc[index["split"].isna(), "image_id"].head(5).tolist()
        raise DatasetError(f"{split_csv} has no split for cached images {missing}")
    return images, index


def save_model(model: torch.nn.Module, path: str | os.PathLike[str], **meta: Any) -> None:
    """Weights together with the config they were trained with."""
    with atomic_path(path) as tmp:
        torch.save({"state_dict": model.state_dict(), **meta}, tmp)


def load_model(path: str | os.PathLike[str], device: torch.device,
               build: Callable[[dict[str, Any]], torch.nn.Module] | None = None,
               ) -> tuple[torch.nn.Module, dict[str, Any]]:
    """A model written by save_model, on ``device``, in eval mode; ``build`` makes the empty
    network from the saved metadata (default: the timm model named ``architecture``)."""
    saved = torch.load(path, map_location="cpu", weights_only=False)
    model = (build(saved) if build else
             models.create(saved["architecture"], num_classes=len(saved["classes"])))
    model.load_state_dict(saved.pop("state_dict"))
    return model.to(device, memory_format=torch.channels_last).eval(), saved


def train_baseline(cache_npy: str, index_csv: str, split_csv: str, *, protocol: str,
                   settings: dict[str, Any], device: torch.device, seed: int,
                   weights_dir: str | None, precision: str, checkpoint_dir: str | Path,
                   out_model: str, out_history: str, out_curve: str, out_metrics: str) -> None:
    """Train the baseline on the training pool, pick the best epoch on val, write everything."""
    images, index = load_split_cache(cache_npy, index_csv, split_csv)
    pool = np.flatnonzero(training_pool(index, protocol).to_numpy())
    val = np.flatnonzero((index["split"] == "val").to_numpy())
    test = np.flatnonzero((index["split"] == "test").to_numpy())
    log.info("baseline %s on %d training-pool images (%s), %d val, %d test, device %s",
             settings["model"], len(pool), protocol, len(val), len(test), device)
    torch.manual_seed(seed)
    model = models.create(settings["model"], num_classes=len(CLASSES),
                          pretrained=settings["pretrained"], weights_dir=weights_dir)
    mean, std = models.normalization(model)
    data = ImageTensor(images, index["label"].to_numpy(), device, mean, std)
    cfg = TrainConfig(
        epochs=settings["epochs"], batch_size=settings["batch_size"], lr=settings["lr"],
        weight_decay=settings["weight_decay"], patience=settings["patience"],
        augment=settings["augment"], class_weights=settings["class_weights"],
        compile=resolve_compile(settings["compile"], device), precision=precision, seed=seed,
        extra={"model": settings["model"], "pretrained": settings["pretrained"],
               "protocol": protocol, "images": int(images.shape[0]), "size": images.shape[1]})
    checkpoint = Path(checkpoint_dir) / "last.pt"
    result = fit(model, data, pool, val, cfg, checkpoint=checkpoint)
    model.load_state_dict(result.state)
    test_scores = scores(index["label"].to_numpy()[test],
                         predict(model, data, test, cfg.batch_size * 2, precision))
    save_model(model, out_model, architecture=settings["model"], classes=list(CLASSES),
               image_size=int(images.shape[1]), mean=mean, std=std, train_config=asdict(cfg),
               settings=settings, best_epoch=result.best_epoch, protocol=protocol)
    write_csv(result.history, out_history)
    plot_history(result.history, result.best_epoch, f"baseline {settings['model']}", out_curve)
    best = result.history.iloc[result.best_epoch - 1]
    write_json({"best_epoch": result.best_epoch,
                "val": {k[4:]: float(best[k]) for k in best.index if k.startswith("val_")},
                "test": test_scores, "train_pool_images": len(pool),
                "parameters_millions": models.count_parameters(model),
                "images_per_s": float(result.history["images_per_s"].median()),
                "device": str(device)}, out_metrics)
    checkpoint.unlink(missing_ok=True)


def resolve_compile(setting: bool | str, device: torch.device) -> bool:
    """``auto`` compiles on CUDA only, where long runs repay the compile time."""
    return device.type == "cuda" if setting == "auto" else bool(setting)


def extract_attention(model_path: str, cache_npy: str, index_csv: str, split_csv: str, *,
                      protocol: str, settings: dict[str, Any], device: torch.device, seed: int,
                      precision: str, out_npy: str, out_index: str, out_figure: str) -> None:
    """SmoothGrad maps for the training pool, aligned row-for-row with the image cache."""
    images, index = load_split_cache(cache_npy, index_csv, split_csv)
    model, meta = load_model(model_path, device)
    pool = np.flatnonzero(training_pool(index, protocol).to_numpy())
    data = ImageTensor(images, index["label"].to_numpy(), device, meta["mean"], meta["std"])
    log.info("SmoothGrad (%d samples, noise %.2f) for %d training-pool images on %s",
             settings["samples"], settings["noise"], len(pool), device)
    maps = smoothgrad(model, data, pool, samples=settings["samples"], noise=settings["noise"],
                      batch_size=settings["batch_size"], precision=precision, seed=seed)
    write_attention(maps, pool, len(index), out_npy)
    in_pool = np.zeros(len(index), bool)
    in_pool[pool] = True
    write_csv(index[["row", "image_id", "dx", "label"]].assign(in_pool=in_pool), out_index)
    plot_overlays(images, np.load(out_npy, mmap_mode="r"), index, pool, out_figure)
