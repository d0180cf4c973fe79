"""train_classifier: one experiment = a balance mode's dataset, a model, a task.

Training follows the experiment's schedule. ``staged`` is paper 000's: warm-up
with frozen backbones, then fine-tuning of the last backbone blocks at a reduced
learning rate. ``single`` is one run with the first ``frozen_layers`` backbone
layers frozen (papers 001-004, the strong baseline). Each stage is the shared loop
(dermflow.training.loop.fit) with the settings' recipe options (optimizer, LR schedule,
label smoothing, sampling, EMA), so it is checkpointed every epoch and resumes; the epoch
with the best validation score (``select``, macro-F1 by default) over all stages is kept.
Validation during training predicts without test-time augmentation; the recorded test
scores use the settings' ``tta``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from dermflow.atomic import write_csv, write_json
from dermflow.data.cache import load_dataset
from dermflow.figures import plot_history
from dermflow.labels import labels_by_position, positions, task_classes
from dermflow.logs import job_formatter, log_as_job
from dermflow.models import backbones, factory
from dermflow.models.freezing import FreezableClassifier
from dermflow.torchfile import save_model
from dermflow.training.batches import ImageTensor, evaluation_batch
from dermflow.training.compilation import resolve_compile
from dermflow.training.distributed import is_writer, run_distributed
from dermflow.training.loop import TrainConfig, fit, predict, scores

log = logging.getLogger(__name__)


def stage_config(settings: dict[str, Any], *, epochs: int, lr: float, patience: int,
                 device: torch.device, precision: str, seed: int,
                 extra: dict[str, Any]) -> TrainConfig:
    return TrainConfig(epochs=epochs, batch_size=settings["batch_size"], lr=lr,
                       weight_decay=settings["weight_decay"], patience=patience,
                       augment=settings["augment"], augmentation=settings["augmentation"],
                       class_weights=settings["class_weights"], monitor=settings["monitor"],
                       select=settings["select"],
                       plateau_factor=settings["plateau_factor"],
                       plateau_patience=settings["plateau_patience"],
                       betas=tuple(settings["betas"]), optimizer=settings["optimizer"],
                       lr_schedule=settings["lr_schedule"],
                       lr_warmup_epochs=settings["lr_warmup_epochs"],
                       label_smoothing=settings["label_smoothing"],
                       sampling=settings["sampling"], sampling_power=settings["sampling_power"],
                       epoch_images=settings["epoch_images"], ema=settings["ema"],
                       compile=resolve_compile(settings["compile"], device),
                       precision=precision, seed=seed, extra=extra)


def training_budget(history: pd.DataFrame, train_images: int, settings: dict[str, Any],
                    ) -> dict[str, int]:
    """What a run trained for, so experiments on datasets of different sizes can be read at
    their budgets: the images an epoch draws (``epoch_images``, else the training split's
    size), the epochs run (every stage, early stopping included), and the optimizer steps
    and images (global batches: the same on any number of GPUs) that the loop recorded in
    each epoch's history row."""
    return {"epoch_images": settings["epoch_images"] or train_images,
            "epochs_trained": len(history),
            "optimizer_steps": int(history["optimizer_steps"].sum()),
            "images_seen": int(history["images_seen"].sum())}


def train_model(model: FreezableClassifier, data: ImageTensor, train: np.ndarray,
                val: np.ndarray, settings: dict[str, Any], *, device: torch.device,
                precision: str, seed: int, checkpoint_dir: Path, extra: dict[str, Any],
                ) -> tuple[pd.DataFrame, int, str]:
    """Train by the settings' schedule; loads the best weights; returns history, best epoch,
    and the stage it came from."""
    if settings["schedule"] == "single":
        model.freeze_leading(settings["frozen_layers"])
        cfg = stage_config(settings, epochs=settings["epochs"], lr=settings["lr"],
                           patience=settings["patience"], device=device, precision=precision,
                           seed=seed, extra={**extra, "stage": "single"})
        result = fit(model, data, train, val, cfg, checkpoint=checkpoint_dir / "single.pt")
        model.load_state_dict(result.state)
        return result.history.assign(stage="single"), result.best_epoch, "single"
    warmup = min(settings["warmup_epochs"], settings["epochs"])
    model.freeze_backbones()
    cfg = stage_config(settings, epochs=warmup, lr=settings["lr"], patience=0, device=device,
                       precision=precision, seed=seed, extra={**extra, "stage": "warmup"})
    first = fit(model, data, train, val, cfg, checkpoint=checkpoint_dir / "warmup.pt")
    history = first.history.assign(stage="warmup")
    best_state, best_epoch, best_stage = first.state, first.best_epoch, "warmup"
    if settings["epochs"] > warmup:
        model.load_state_dict(first.state)
        model.unfreeze(settings["unfreeze_blocks"])
        cfg = stage_config(settings, epochs=settings["epochs"] - warmup,
                           lr=settings["lr"] * settings["finetune_lr_scale"],
                           patience=settings["patience"], device=device, precision=precision,
                           seed=seed + 1, extra={**extra, "stage": "finetune"})
        second = fit(model, data, train, val, cfg, checkpoint=checkpoint_dir / "finetune.pt")
        tail = second.history.assign(stage="finetune", epoch=second.history["epoch"] + warmup)
        history = pd.concat([history, tail], ignore_index=True)
        if second.improves_on(first):
            best_state, best_epoch, best_stage = second.state, second.best_epoch + warmup, \
                "finetune"
    model.load_state_dict(best_state)
    return history, best_epoch, best_stage


def train_classifier(*, device: torch.device, gpus: int = 1,
                     log_file: str | None = None, **job: Any) -> None:
    """Train one experiment's classifier on ``gpus`` GPUs (DDP when more than one).

    ``job`` holds _train_classifier's arguments (paths and settings, all picklable),
    so every DDP rank can load its own copy of the data onto its own GPU. Without a
    GPU, ``gpus`` > 1 trains in that many CPU processes (gloo): the multi-GPU path,
    rehearsed on any machine.
    """
    if gpus > 1:
        log.info("DistributedDataParallel over %d %s, one process each", gpus,
                 "GPUs" if device.type == "cuda" else "CPU processes (gloo)")
        run_distributed(_classifier_rank, gpus, device.type, log_file, job_formatter(), job,
                        device=device)
    else:
        _train_classifier(device=device, **job)


def _classifier_rank(rank: int, device_type: str, log_file: str | None,
                     formatter: logging.Formatter, job: dict[str, Any]) -> None:
    """One DDP rank; rank 0 keeps writing the job's lines (to its log and the console)
    with the job's tag."""
    if rank == 0:
        log_as_job(log_file, formatter)
    device = torch.device("cuda", rank) if device_type == "cuda" else torch.device("cpu")
    _train_classifier(device=device, **job)


def _train_classifier(dataset_csv: str, cache_npy: str, extra_npy: str | None, *, name: str,
                      experiment: dict[str, Any], settings: dict[str, Any],
                      device: torch.device, seed: int, weights_dir: str | None, precision: str,
                      protocol: str, preparation: dict[str, Any], checkpoint_dir: str | Path,
                      out_model: str, out_history: str, out_curve: str,
                      out_metrics: str) -> None:
    """Train one experiment's classifier; rank 0 writes model (with the ``preparation`` its
    images had, dermflow.data.preparation), history, curve and metrics."""
    images, table = load_dataset(dataset_csv, cache_npy, extra_npy)
    train, val, test = (positions(table, s) for s in ("train", "val", "test"))
    size = int(images.shape[1])
    task = experiment.get("task", "multiclass")
    classes = task_classes(task)
    torch.manual_seed(seed)
    model = factory.create(experiment["model"], image_size=size, settings=settings,
                           weights_dir=weights_dir, num_classes=len(classes))
    mean, std = backbones.normalization(model)
    labels = labels_by_position(table, len(images), task)
    data = ImageTensor(images, labels, device, mean, std)
    sources = table[table["split"] == "train"]["source"].value_counts().to_dict()
    log.info("%s: %s (%s, %s schedule) on %s data (%d train %s, %d val, %d test), %.1fM "
             "parameters, device %s", name, experiment["model"], task, settings["schedule"],
             experiment["balance"], len(train), sources, len(val), len(test),
             backbones.count_parameters(model), device)
    log.info("recipe %s: %s lr %g (%s, warm-up %g epochs), weight decay %g, label smoothing "
             "%g, %s sampling (power %g), %s images per epoch, EMA %g, test-time augmentation "
             "%s",
             experiment.get("recipe", "the model's own"), settings["optimizer"], settings["lr"],
             settings["lr_schedule"], settings["lr_warmup_epochs"], settings["weight_decay"],
             settings["label_smoothing"], settings["sampling"], settings["sampling_power"],
             settings["epoch_images"] or len(train), settings["ema"], settings["tta"])
    started = time.perf_counter()
    history, best_epoch, best_stage = train_model(
        model, data, train, val, settings, device=device, precision=precision, seed=seed,
        checkpoint_dir=Path(checkpoint_dir),
        extra={"experiment": experiment, "images": len(images), "size": size,
               "settings": settings, "protocol": protocol})
    seconds = time.perf_counter() - started
    if not is_writer():
        return
    test_scores = scores(labels[test], predict(model, data, test,
                                               evaluation_batch(settings["batch_size"]),
                                               precision, settings["tta"]))
    save_model(model, out_model, kind="classifier", architecture=experiment["model"],
               task=task, classes=list(classes), image_size=size, mean=mean, std=std,
               settings=settings, experiment=experiment, name=name, best_epoch=best_epoch,
               protocol=protocol, preparation=preparation)
    write_csv(history, out_history)
    plot_history(history, best_epoch, f"{name} ({experiment['model']})", out_curve)
    best = history.iloc[best_epoch - 1]
    metrics = {"experiment": name, **experiment, "best_epoch": best_epoch,
               "best_stage": best_stage,
               "val": {k[4:]: float(best[k]) for k in best.index if str(k).startswith("val_")},
               "test": test_scores, "train_images": sources,
               **training_budget(history, len(train), settings),
               "parameters_millions": backbones.count_parameters(model),
               "training_seconds": seconds,
               "images_per_s": float(history["images_per_s"].median()), "device": str(device),
               "train_config": asdict(stage_config(
                   settings, epochs=settings["epochs"], lr=settings["lr"],
                   patience=settings["patience"], device=device, precision=precision, seed=seed,
                   extra={}))}
    write_json(metrics, out_metrics)
    for stage in ("warmup", "finetune", "single"):
        (Path(checkpoint_dir) / f"{stage}.pt").unlink(missing_ok=True)
