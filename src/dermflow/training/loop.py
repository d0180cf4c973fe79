"""The supervised training loop every classifier stage shares.

Fast on a GPU (data resident on the device, GPU-side augmentation, bf16
autocast, channels_last, optional torch.compile, no per-step host syncs), on
several GPUs with DDP inside a process group (dermflow.training.distributed), and
resumable: each epoch ends with an atomic checkpoint, and all randomness of an
epoch is seeded from (seed, epoch), so a killed run that resumes reaches the
same weights as one that never stopped.

The recipe options (TrainConfig): Adam or AdamW, a learning-rate schedule
(dermflow.training.schedules), label smoothing, class-balanced sampling
(dermflow.training.sampling) and an exponential moving average of the weights
(dermflow.training.ema); the baseline runs them off (training.baseline.PLAIN_LOOP).
``predict`` averages test-time augmentation views (dermflow.training.tta).
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel

from dermflow.atomic import atomic_path
from dermflow.evaluation.selection import selection_scores
from dermflow.torchfile import load_plain
from dermflow.training.batches import ImageTensor, batches, evaluation_batch
from dermflow.training.distributed import in_process_group, rank_world
from dermflow.training.ema import EMA, NORM_IMAGES
from dermflow.training.sampling import epoch_order, image_weights
from dermflow.training.schedules import CURVES, lr_factor, resolve
from dermflow.training.tta import tta_probs

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainConfig:
    """What defines a training run (its hash names the checkpoint it may resume). No defaults:
    each stage builds it from its validated config section (the schema holds the defaults)."""

    epochs: int
    batch_size: int
    lr: float
    weight_decay: float
    patience: int  # epochs without gain in ``monitor`` before stopping; 0: never stop early
    augment: bool
    augmentation: str  # a key of batches.AUGMENTATIONS
    class_weights: bool
    monitor: str  # what early stopping and LR-on-plateau watch (or val_loss)
    plateau_factor: float  # LR x this after plateau_patience epochs without gain
    plateau_patience: int  # lr_schedule plateau (constant with patience > 0 is plateau)
    betas: tuple[float, float]  # Adam/AdamW
    optimizer: str  # adam (L2 weight decay) | adamw (decoupled weight decay)
    lr_schedule: str  # a key of schedules.SCHEDULES
    lr_warmup_epochs: float  # cosine/onecycle: warm-up length (stepped per batch)
    label_smoothing: float
    sampling: str  # uniform | balanced (class weights 1/f^sampling_power)
    sampling_power: float
    epoch_images: int | None  # images an epoch draws (sampling.epoch_order); None: all
    ema: float  # decay of the weights' moving average (validated and kept); 0: off
    compile: bool  # decided by dermflow.training.compilation.resolve_compile
    precision: str  # bf16 autocast on CUDA, or fp32
    seed: int
    extra: dict[str, Any] = field(default_factory=dict)  # model/data identity, for the hash

    def fingerprint(self) -> str:
        return fingerprint(self)


def fingerprint(settings: Any) -> str:
    """A short hash of a dataclass of settings: a checkpoint resumes only the run it belongs to."""
    return hashlib.sha256(json.dumps(asdict(settings), sort_keys=True, default=str).encode()
                          ).hexdigest()[:16]


@dataclass
class FitResult:
    """The selected weights and the per-epoch record."""

    state: dict[str, torch.Tensor]
    best_epoch: int
    history: pd.DataFrame


def autocast(device: torch.device, precision: str) -> torch.autocast:
    """bf16 autocast on CUDA when asked for; a no-op context otherwise."""
    enabled = device.type == "cuda" and precision == "bf16"
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=enabled)


def seed_epoch(seed: int, epoch: int,
               device: torch.device) -> tuple[torch.Generator, torch.Generator]:
    """Generators (host, device) and global RNGs for one epoch, from (seed, epoch) alone."""
    value = int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0])
    torch.manual_seed(value)
    host = torch.Generator().manual_seed(value)
    on_device = torch.Generator(device=device).manual_seed(value)
    return host, on_device


@torch.no_grad()
def predict(model: torch.nn.Module, data: ImageTensor, index: np.ndarray, batch_size: int,
            precision: str = "bf16", tta: str = "none") -> np.ndarray:
    """Softmax probabilities (len(index) x classes) in eval mode, without training
    augmentation; averaged over the views of ``tta`` (a key of tta.VIEWS)."""
    model.eval()
    out = []
    for chunk in batches(torch.tensor(index), batch_size):  # a copy: pandas arrays are read-only
        x, _ = data.batch(chunk)
        with autocast(data.device, precision):
            out.append(tta_probs(model, x, tta))
    return torch.cat(out).cpu().numpy() if out else np.zeros((0, 0), np.float32)


def cross_entropy(logits: torch.Tensor, labels: torch.Tensor, weight: torch.Tensor | None,
                  smoothing: float) -> torch.Tensor:
    """Cross-entropy with optional class weights and label smoothing (the target puts
    1 - smoothing on the label and smoothing spread evenly over all classes)."""
    return F.cross_entropy(logits.float(), labels, weight=weight, label_smoothing=smoothing)


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """Adam (weight decay added to the gradient) or AdamW (decoupled) over what learns."""
    kind = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}[cfg.optimizer]
    return kind((p for p in model.parameters() if p.requires_grad), lr=cfg.lr, betas=cfg.betas,
                weight_decay=cfg.weight_decay)


def steps_per_epoch(images: int, batch_size: int) -> int:
    """Optimizer steps of an epoch of ``images`` (batches(drop_last=True) keeps a lone short
    batch)."""
    chunks = -(-images // batch_size)
    return chunks - 1 if chunks > 1 and images % batch_size else chunks


def scores(labels: np.ndarray, probs: np.ndarray) -> dict[str, float]:
    """The metrics model selection and progress lines use (dermflow.evaluation.selection,
    not the full table, so editing an evaluation metric retrains nothing)."""
    return selection_scores(labels, probs)


def log_loss(labels: np.ndarray, probs: np.ndarray) -> float:
    """Mean cross-entropy of predicted probabilities (what Keras reports as val_loss)."""
    if not len(labels):
        return float("nan")
    return float(-np.log(np.clip(probs[np.arange(len(labels)), labels], 1e-12, 1)).mean())


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    """Atomically, so a job killed while writing leaves the previous epoch's checkpoint."""
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load_checkpoint(path: Path, device: torch.device) -> dict[str, Any]:
    """A checkpoint save_checkpoint wrote (tensors and plain data only: no code runs);
    DamagedFileError for any other file, whose cure is to train from the start."""
    return load_plain(path, map_location=device,
                      remedy="delete it and rerun: training then starts from epoch 1")


def fit(model: torch.nn.Module, data: ImageTensor, train_idx: np.ndarray, val_idx: np.ndarray,
        cfg: TrainConfig, checkpoint: Path | None = None,
        optimizer_factory: Callable[[torch.nn.Module], torch.optim.Optimizer] | None = None,
        ) -> FitResult:
    """Train, select the epoch with the best validation macro-F1, checkpoint every epoch."""
    device = data.device
    model.to(device, memory_format=torch.channels_last)
    optimizer = optimizer_factory(model) if optimizer_factory else make_optimizer(model, cfg)
    base_lrs = [group["lr"] for group in optimizer.param_groups]
    schedule = resolve(cfg.lr_schedule, cfg.plateau_patience)
    steps = steps_per_epoch(cfg.epoch_images or len(train_idx), cfg.batch_size)
    total_steps, warmup_steps = cfg.epochs * steps, round(cfg.lr_warmup_epochs * steps)
    ema = EMA(model, cfg.ema) if cfg.ema else None
    lower = cfg.monitor == "val_loss"
    plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, mode="min" if lower else "max", factor=cfg.plateau_factor,
        patience=max(cfg.plateau_patience - 1, 0))
    labels = data.labels.cpu().numpy()
    n_classes = int(getattr(model, "num_classes", labels.max() + 1))
    weight = None
    if cfg.class_weights:
        counts = np.bincount(labels[train_idx], minlength=n_classes).astype(np.float64)
        weight = torch.tensor(len(train_idx) / (n_classes * np.maximum(counts, 1)),
                              dtype=torch.float32, device=device)
    drawing = (image_weights(labels[train_idx], cfg.sampling_power)
               if cfg.sampling == "balanced" else None)
    history: list[dict[str, float]] = []
    best_state, best_metric, best_epoch, start = None, -1.0, -1, 0
    watched, watched_epoch = float("inf") if lower else -float("inf"), -1
    run_id = cfg.fingerprint()
    if checkpoint is not None and checkpoint.is_file():
        saved = load_checkpoint(checkpoint, device)
        if saved["fingerprint"] == run_id:
            model.load_state_dict(saved["model"])
            optimizer.load_state_dict(saved["optimizer"])
            history, best_metric, best_epoch = saved["history"], saved["best_metric"], saved[
                "best_epoch"]
            best_state, start = saved["best_state"], saved["epoch"]
            watched, watched_epoch = saved["watched"], saved["watched_epoch"]
            plateau.load_state_dict(saved["plateau"])
            if ema is not None:
                ema.load_state_dict(saved["ema"])
            log.info("resuming from %s after epoch %d", checkpoint, start)
        else:
            log.info("ignoring checkpoint %s: it belongs to another configuration", checkpoint)
    rank, world = rank_world()
    if cfg.batch_size % world:
        raise ValueError(f"batch_size {cfg.batch_size} does not split over {world} GPUs")
    step_model: torch.nn.Module = model
    distributed = in_process_group()  # DDP in any process group, a one-process one too
    if distributed:
        if device.type == "cuda":  # batch statistics over the global batch, as on one GPU
            torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)  # swaps the BN layers in place
        step_model = DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    step_model = torch.compile(step_model) if cfg.compile else step_model
    train_tensor = torch.tensor(train_idx)  # a copy: pandas may hand out read-only arrays
    for epoch in range(start, cfg.epochs):
        if cfg.patience and watched_epoch >= 0 and epoch - watched_epoch > cfg.patience:
            log.info("early stop: no %s gain for %d epochs", cfg.monitor, cfg.patience)
            break
        host_gen, device_gen = seed_epoch(cfg.seed, epoch, device)
        order = epoch_order(train_tensor, drawing, host_gen, cfg.epoch_images)
        model.train()
        started = time.perf_counter()
        loss_sum = torch.zeros((), device=device)
        seen = stepped = 0
        for step, chunk in enumerate(batches(order, cfg.batch_size, drop_last=True),
                                     start=epoch * steps):
            x, y = data.batch(chunk, device_gen if cfg.augment else None, cfg.augmentation)
            if world > 1:  # the same global batch on every rank; each trains on its share
                x, y = x[rank::world], y[rank::world]
            with autocast(device, cfg.precision):
                loss = cross_entropy(step_model(x), y, weight, cfg.label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if schedule in CURVES:
                factor = lr_factor(schedule, step, total_steps, warmup_steps)
                for group, base in zip(optimizer.param_groups, base_lrs, strict=True):
                    group["lr"] = base * factor
            optimizer.step()
            stepped += 1
            if ema is not None:
                ema.update()
            loss_sum += loss.detach() * len(chunk)
            seen += len(chunk)
        if distributed:
            torch.distributed.all_reduce(loss_sum)
            loss_sum /= world
        train_loss = float(loss_sum) / max(seen, 1)
        elapsed = time.perf_counter() - started
        if ema is not None:  # the whole batch on every rank: the averages stay equal
            with autocast(device, cfg.precision):
                ema.recompute_norms(model, (
                    data.batch(chunk, device_gen if cfg.augment else None, cfg.augmentation)[0]
                    for chunk in batches(order[:NORM_IMAGES], cfg.batch_size, drop_last=True)))
        kept = ema.model if ema is not None else model  # what is validated and kept
        val_probs = predict(kept, data, val_idx, evaluation_batch(cfg.batch_size), cfg.precision)
        val = scores(labels[val_idx], val_probs)
        row = {"epoch": epoch + 1, "train_loss": train_loss, "images_per_s": seen / elapsed,
               "seconds": elapsed, "lr": optimizer.param_groups[0]["lr"],
               "optimizer_steps": stepped, "images_seen": seen,  # the global batches trained
               **{f"val_{k}": v for k, v in val.items()},
               "val_loss": log_loss(labels[val_idx], val_probs)}
        history.append(row)
        if val["macro_f1"] > best_metric:
            best_metric, best_epoch = val["macro_f1"], epoch
            best_state = copy.deepcopy({k: v.detach().cpu() for k, v in kept.state_dict().items()})
        if (row[cfg.monitor] < watched) if lower else (row[cfg.monitor] > watched):
            watched, watched_epoch = row[cfg.monitor], epoch
        if schedule == "plateau":
            plateau.step(row[cfg.monitor])
        log.info("epoch %d/%d loss %.4f val loss %.4f macro-F1 %.4f bal-acc %.4f acc %.4f | "
                 "lr %.2g | %.0f img/s", epoch + 1, cfg.epochs, train_loss, row["val_loss"],
                 val["macro_f1"], val["balanced_accuracy"], val["accuracy"], row["lr"],
                 row["images_per_s"])
        if checkpoint is not None and rank == 0:
            save_checkpoint(checkpoint, {
                "fingerprint": run_id, "epoch": epoch + 1, "model": model.state_dict(),
                "optimizer": optimizer.state_dict(), "history": history,
                "best_metric": best_metric, "best_epoch": best_epoch, "best_state": best_state,
                "watched": watched, "watched_epoch": watched_epoch,
                "plateau": plateau.state_dict(),
                "ema": ema.state_dict() if ema is not None else None})
    if best_state is None:
        raise RuntimeError("training ran no epoch: check epochs and the training split")
    return FitResult(best_state, best_epoch + 1, pd.DataFrame(history))
