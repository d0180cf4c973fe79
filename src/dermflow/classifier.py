"""train_classifier and predict: one experiment = a balance mode's dataset, a model, a task.

Training follows the experiment's schedule. ``staged`` is paper 000's: warm-up
with frozen backbones, then fine-tuning of the last backbone blocks at a reduced
learning rate. ``single`` is one run with the first ``frozen_layers`` backbone
layers frozen (papers 001-004). Each stage is the shared loop
(dermflow.train.fit), so it is checkpointed every epoch and resumes; the epoch
with the best validation macro-F1 over all stages is kept.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from captum.attr import LayerAttribution, LayerGradCam

from dermflow import architectures, models
from dermflow.atomic import write_csv, write_json
from dermflow.baseline import load_model, resolve_compile, save_model
from dermflow.batches import ImageTensor
from dermflow.cache import resize_square
from dermflow.datasets import load_dataset
from dermflow.distributed import is_writer, run_distributed
from dermflow.figures import plot_history, plt, save
from dermflow.freezing import FreezableClassifier
from dermflow.hair import HairParams, remove_hair
from dermflow.images import read_rgb
from dermflow.labels import task_classes, task_labels
from dermflow.stage import FORMAT
from dermflow.train import TrainConfig, fit, predict, scores

log = logging.getLogger(__name__)


def with_probabilities(rows: pd.DataFrame, probs: np.ndarray, classes: list[str]) -> pd.DataFrame:
    """``rows`` plus a ``prob_<class>`` column per class and the arg-max ``pred``."""
    out = rows.assign(**{f"prob_{dx}": probs[:, k] for k, dx in enumerate(classes)})
    out["pred"] = probs.argmax(1)
    return out


def labels_by_position(table: pd.DataFrame, n: int, task: str) -> np.ndarray:
    """The task's labels aligned with the combined image array (unused positions get 0)."""
    labels = np.zeros(n, np.int64)
    labels[table["pos"].to_numpy()] = task_labels(table["dx"].to_numpy(), task)
    return labels


def positions(table: pd.DataFrame, split: str) -> np.ndarray:
    return table.loc[table["split"] == split, "pos"].to_numpy()


def stage_config(settings: dict[str, Any], *, epochs: int, lr: float, patience: int,
                 device: torch.device, precision: str, seed: int,
                 extra: dict[str, Any]) -> TrainConfig:
    return TrainConfig(epochs=epochs, batch_size=settings["batch_size"], lr=lr,
                       weight_decay=settings["weight_decay"], patience=patience,
                       augment=settings["augment"], augmentation=settings["augmentation"],
                       class_weights=settings["class_weights"], monitor=settings["monitor"],
                       plateau_factor=settings["plateau_factor"],
                       plateau_patience=settings["plateau_patience"],
                       betas=tuple(settings["betas"]),
                       compile=resolve_compile(settings["compile"], device),
                       precision=precision, seed=seed, extra=extra)


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
    best_f1 = float(first.history["val_macro_f1"].max())
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
        if float(second.history["val_macro_f1"].max()) > best_f1:
            best_state, best_epoch, best_stage = second.state, second.best_epoch + warmup, \
                "finetune"
    model.load_state_dict(best_state)
    return history, best_epoch, best_stage


def train_classifier(*, device: torch.device, gpus: int = 1,
                     log_file: str | None = None, **job: Any) -> None:
    """Train one experiment's classifier on ``gpus`` GPUs (DDP when more than one).

    ``job`` holds _train_classifier's arguments (paths and settings, all picklable),
    so every DDP rank can load its own copy of the data onto its own GPU.
    """
    if gpus > 1 and device.type == "cuda":
        log.info("DistributedDataParallel over %d GPUs, one process each", gpus)
        run_distributed(_classifier_rank, gpus, log_file, job)
    else:
        _train_classifier(device=device, **job)


def _classifier_rank(rank: int, log_file: str | None, job: dict[str, Any]) -> None:
    """One DDP rank; rank 0 keeps writing to the rule's log."""
    if rank == 0 and log_file:
        logging.basicConfig(filename=log_file, level=logging.INFO, format=FORMAT)
    _train_classifier(device=torch.device("cuda", rank), **job)


def _train_classifier(dataset_csv: str, cache_npy: str, extra_npy: str | None, *, name: str,
                      experiment: dict[str, Any], settings: dict[str, Any],
                      device: torch.device, seed: int, weights_dir: str | None, precision: str,
                      protocol: str, checkpoint_dir: str | Path, out_model: str,
                      out_history: str, out_curve: str, out_metrics: str) -> None:
    """Train one experiment's classifier; rank 0 writes model, history, curve and metrics."""
    images, table = load_dataset(dataset_csv, cache_npy, extra_npy)
    train, val, test = (positions(table, s) for s in ("train", "val", "test"))
    size = int(images.shape[1])
    task = experiment.get("task", "multiclass")
    classes = task_classes(task)
    torch.manual_seed(seed)
    model = architectures.create(experiment["model"], image_size=size, settings=settings,
                                 weights_dir=weights_dir, num_classes=len(classes))
    mean, std = models.normalization(model)
    labels = labels_by_position(table, len(images), task)
    data = ImageTensor(images, labels, device, mean, std)
    sources = table[table["split"] == "train"]["source"].value_counts().to_dict()
    log.info("%s: %s (%s, %s schedule) on %s data (%d train %s, %d val, %d test), %.1fM "
             "parameters, device %s", name, experiment["model"], task, settings["schedule"],
             experiment["balance"], len(train), sources, len(val), len(test),
             models.count_parameters(model), device)
    started = time.perf_counter()
    history, best_epoch, best_stage = train_model(
        model, data, train, val, settings, device=device, precision=precision, seed=seed,
        checkpoint_dir=Path(checkpoint_dir),
        extra={"experiment": experiment, "images": len(images), "size": size,
               "settings": settings, "protocol": protocol})
    seconds = time.perf_counter() - started
    if not is_writer():
        return
    test_scores = scores(labels[test], predict(model, data, test, settings["batch_size"] * 2,
                                               precision))
    save_model(model, out_model, kind="classifier", architecture=experiment["model"],
               task=task, classes=list(classes), image_size=size, mean=mean, std=std,
               settings=settings, experiment=experiment, name=name, best_epoch=best_epoch,
               protocol=protocol)
    write_csv(history, out_history)
    plot_history(history, best_epoch, f"{name} ({experiment['model']})", out_curve)
    best = history.iloc[best_epoch - 1]
    metrics = {"experiment": name, **experiment, "best_epoch": best_epoch,
               "best_stage": best_stage,
               "val": {k[4:]: float(best[k]) for k in best.index if str(k).startswith("val_")},
               "test": test_scores, "train_images": sources,
               "parameters_millions": models.count_parameters(model),
               "training_seconds": seconds,
               "images_per_s": float(history["images_per_s"].median()), "device": str(device),
               "train_config": asdict(stage_config(
                   settings, epochs=settings["epochs"], lr=settings["lr"],
                   patience=settings["patience"], device=device, precision=precision, seed=seed,
                   extra={}))}
    write_json(metrics, out_metrics)
    for stage in ("warmup", "finetune", "single"):
        (Path(checkpoint_dir) / f"{stage}.pt").unlink(missing_ok=True)


def _empty_classifier(saved: dict[str, Any]) -> FreezableClassifier:
    return architectures.create(saved["architecture"], image_size=saved["image_size"],
                                settings={**saved["settings"], "pretrained": False},
                                weights_dir=None, num_classes=len(saved["classes"]))


def load_classifier(path: str | os.PathLike[str], device: torch.device,
                    ) -> tuple[FreezableClassifier, dict[str, Any]]:
    """A classifier written by train_classifier, on ``device``, in eval mode."""
    model, meta = load_model(path, device, build=_empty_classifier)
    assert isinstance(model, FreezableClassifier)
    return model, meta


def predict_external(model: FreezableClassifier, meta: dict[str, Any], cache_npy: str,
                     index_csv: str, *, device: torch.device, precision: str,
                     batch_size: int) -> pd.DataFrame:
    """Prediction rows (split ``external``) for the external test set's image cache."""
    images = np.load(cache_npy, mmap_mode="r")
    index = pd.read_csv(index_csv)
    labels = task_labels(index["dx"].to_numpy(), meta["task"])
    data = ImageTensor(images, labels, device, meta["mean"], meta["std"])
    probs = predict(model, data, np.arange(len(index)), batch_size, precision)
    return with_probabilities(
        index[["image_id", "dx"]].assign(label=labels, split="external", source="real", pos=-1),
        probs, meta["classes"])


def predict_files(model_path: str | os.PathLike[str], paths: list[str], *,
                  device: torch.device, hair: HairParams | None = None,
                  precision: str = "bf16", batch_size: int = 32) -> pd.DataFrame:
    """Class probabilities for image files, prepared as the pipeline prepared its images
    (hair removal with ``hair`` when given, then the cache's square resize)."""
    model, meta = load_classifier(model_path, device)
    prepared = []
    for path in paths:
        image = read_rgb(str(path))
        if hair is not None:
            image = remove_hair(image, hair)[0]
        prepared.append(resize_square(image, meta["image_size"]))
    data = ImageTensor(np.stack(prepared), np.zeros(len(prepared), np.int64), device,
                       meta["mean"], meta["std"])
    probs = predict(model, data, np.arange(len(prepared)), batch_size, precision)
    out = with_probabilities(pd.DataFrame({"path": [str(p) for p in paths]}), probs,
                             meta["classes"])
    out["pred"] = [meta["classes"][k] for k in out["pred"]]
    return out


def grad_cam(model: FreezableClassifier, x: torch.Tensor, target: torch.Tensor,
             ) -> np.ndarray:
    """Grad-CAM maps (N x H x W, scaled to [0, 1]) of ``target`` classes at the model's
    saliency layer (captum)."""
    cam = LayerGradCam(model, model.saliency_layer())
    maps = cam.attribute(x, target=target, relu_attributions=True)
    maps = LayerAttribution.interpolate(maps, tuple(x.shape[-2:]), "bilinear")[:, 0]
    peak = maps.flatten(1).amax(1).clamp_min(1e-12).view(-1, 1, 1)
    return (maps / peak).detach().float().cpu().numpy()


@torch.no_grad()
def attention_maps(model: FreezableClassifier, x: torch.Tensor) -> np.ndarray | None:
    """The model's own attention (N x H x W in [0, 1]) when it has one (paper 001's hybrid)."""
    method = getattr(model, "attention_map", None)
    maps = method(x) if method is not None else None
    return None if maps is None else maps.float().cpu().numpy()


def plot_saliency(images: np.ndarray, maps: dict[str, np.ndarray], rows: pd.DataFrame,
                  classes: list[str], out_png: str | os.PathLike[str]) -> None:
    """The paper's Fig. 11: test images with Grad-CAM (and the model's own attention map,
    paper 001's heatmaps, where it has one), one row per kind of map."""
    n = max(1, len(rows))
    fig, axes = plt.subplots(len(maps), n, figsize=(2.0 * n, 2.6 * len(maps)), squeeze=False)
    for axes_row, (kind, heat) in zip(axes, maps.items(), strict=True):
        for ax, (_, item), cam in zip(axes_row, rows.iterrows(), heat, strict=False):
            ax.imshow(images[int(item["pos"])])
            ax.imshow(cam, cmap="jet", alpha=0.4, vmin=0, vmax=1)
            ax.set_title(f"{item['dx']} → {classes[int(item['pred'])]}", fontsize=8)
        for ax in axes_row:
            ax.axis("off")
        axes_row[0].text(-0.1, 0.5, kind, transform=axes_row[0].transAxes, rotation=90,
                         ha="right", va="center", fontsize=9)
    save(fig, out_png)


def predict_experiment(model_path: str, dataset_csv: str, cache_npy: str, extra_npy: str | None,
                       *, device: torch.device, precision: str, per_class: int, batch_size: int,
                       out_predictions: str, out_saliency: str,
                       external: tuple[str, str] | None = None) -> pd.DataFrame:
    """Val and test predictions (a probability per class of the experiment's task), the
    external test set's too when given (its cache and index), and saliency maps for a few
    test images."""
    images, table = load_dataset(dataset_csv, cache_npy, extra_npy)
    model, meta = load_classifier(model_path, device)
    labels = labels_by_position(table, len(images), meta["task"])
    data = ImageTensor(images, labels, device, meta["mean"], meta["std"])
    rows = table[table["split"].isin(["val", "test"])].reset_index(drop=True)
    rows["label"] = labels[rows["pos"].to_numpy()]
    probs = predict(model, data, rows["pos"].to_numpy(), batch_size, precision)
    out = with_probabilities(rows[["image_id", "split", "source", "dx", "label", "pos"]], probs,
                             meta["classes"])
    if external is not None:
        out = pd.concat([out, predict_external(model, meta, *external, device=device,
                                               precision=precision, batch_size=batch_size)],
                        ignore_index=True)
    write_csv(out.drop(columns="pos"), out_predictions)
    test = out[out["split"] == "test"]
    chosen = test.groupby("dx", sort=False).head(per_class).sort_values(
        ["label", "dx"], kind="stable")
    x, _ = data.batch(torch.tensor(chosen["pos"].to_numpy()))
    maps = {"Grad-CAM": grad_cam(model, x, torch.tensor(chosen["pred"].to_numpy(),
                                                        device=device))}
    attention = attention_maps(model, x)
    if attention is not None:
        maps["attention"] = attention
    plot_saliency(images, maps, chosen, meta["classes"], out_saliency)
    log.info("predicted %d val/test images; test accuracy %.3f", len(out),
             float((test["pred"] == test["label"]).mean()) if len(test) else float("nan"))
    return out
