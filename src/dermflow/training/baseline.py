"""train_baseline: the ResNet50V2 whose saliency (dermflow.training.attention) conditions the
C'GAN.

It learns from the protocol's training pool only (``grouped``: the train split); the
validation split picks the best epoch; the test split is scored once, for the record,
never for a decision.
"""

from __future__ import annotations

import logging
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dermflow.atomic import write_csv, write_json
from dermflow.data.cache import load_split_cache
from dermflow.data.split import training_pool
from dermflow.figures import plot_history
from dermflow.labels import CLASSES
from dermflow.models import backbones
from dermflow.torchfile import save_model
from dermflow.training.batches import ImageTensor, evaluation_batch
from dermflow.training.compilation import resolve_compile
from dermflow.training.loop import TrainConfig, fit, predict, scores

log = logging.getLogger(__name__)

# The paper's plain loop: Adam at a constant rate, no label smoothing, each image once per
# epoch, no weight average. The baseline section has no recipe keys, so these are fixed.
PLAIN_LOOP: dict[str, Any] = {
    "augmentation": "dermoscopy", "monitor": "val_macro_f1", "select": "val_macro_f1",
    "plateau_factor": 0.2,
    "plateau_patience": 0, "betas": (0.9, 0.999), "optimizer": "adam",
    "lr_schedule": "constant", "lr_warmup_epochs": 0.0, "label_smoothing": 0.0,
    "sampling": "uniform", "sampling_power": 0.5, "epoch_images": None, "ema": 0.0}


def train_config(settings: dict[str, Any], *, compile_: bool, precision: str, seed: int,
                 extra: dict[str, Any]) -> TrainConfig:
    """The baseline's run: the ``baseline`` section's keys on the plain loop."""
    return TrainConfig(
        epochs=settings["epochs"], batch_size=settings["batch_size"], lr=settings["lr"],
        weight_decay=settings["weight_decay"], patience=settings["patience"],
        augment=settings["augment"], class_weights=settings["class_weights"],
        compile=compile_, precision=precision, seed=seed, extra=extra, **PLAIN_LOOP)


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
    model = backbones.create(settings["model"], num_classes=len(CLASSES),
                          pretrained=settings["pretrained"], weights_dir=weights_dir)
    mean, std = backbones.normalization(model)
    data = ImageTensor(images, index["label"].to_numpy(), device, mean, std)
    cfg = train_config(
        settings, compile_=resolve_compile(settings["compile"], device, "baseline.compile"),
        precision=precision, seed=seed,
        extra={"model": settings["model"], "pretrained": settings["pretrained"],
               "protocol": protocol, "images": int(images.shape[0]), "size": images.shape[1]})
    checkpoint = Path(checkpoint_dir) / "last.pt"
    result = fit(model, data, pool, val, cfg, checkpoint=checkpoint)
    model.load_state_dict(result.state)
    test_scores = scores(index["label"].to_numpy()[test],
                         predict(model, data, test, evaluation_batch(cfg.batch_size), precision))
    save_model(model, out_model, architecture=settings["model"], classes=list(CLASSES),
               image_size=int(images.shape[1]), mean=mean, std=std, train_config=asdict(cfg),
               settings=settings, best_epoch=result.best_epoch, protocol=protocol)
    write_csv(result.history, out_history)
    plot_history(result.history, result.best_epoch, f"baseline {settings['model']}", out_curve)
    best = result.history.iloc[result.best_epoch - 1]
    write_json({"best_epoch": result.best_epoch,
                "val": {k[4:]: float(best[k]) for k in best.index if k.startswith("val_")},
                "test": test_scores, "train_pool_images": len(pool),
                "parameters_millions": backbones.count_parameters(model),
                "images_per_s": float(result.history["images_per_s"].median()),
                "device": str(device)}, out_metrics)
    checkpoint.unlink(missing_ok=True)
