"""The supervised training loop every classifier stage shares: ``fit``.

``fit`` runs a ClassifierTrainer on the shared engine (dermflow.training.engine: resume,
seeded epoch order, checkpoints, the kept epoch by ``select``). Its hooks are the steps of
an epoch, in order: ``prepare`` (DDP, torch.compile), ``stop_early`` (patience on
``monitor``), ``train_epoch`` and its ``train_step`` / ``set_lr``, ``validate`` (the EMA's
norms, the val scores), ``end_epoch`` (plateau, the progress line); a new training trick is
one of them. Fast on a GPU (data resident on the device, GPU-side augmentation, bf16
autocast, channels_last, optional torch.compile, no per-step host syncs), on several GPUs
with DDP inside a process group (dermflow.training.distributed).

The recipe options (TrainConfig): Adam or AdamW, a learning-rate schedule
(dermflow.training.schedules), label smoothing, class-balanced sampling
(dermflow.training.sampling) and an exponential moving average of the weights
(dermflow.training.ema); the baseline runs them off (training.baseline.PLAIN_LOOP).
``predict`` averages test-time augmentation views (dermflow.training.tta).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel

from dermflow.evaluation.selection import selection_scores
from dermflow.training.batches import ImageTensor, batches, evaluation_batch
from dermflow.training.distributed import in_process_group, rank_world
from dermflow.training.ema import EMA, NORM_IMAGES
from dermflow.training.engine import Monitor, Row, Trainer, fingerprint
from dermflow.training.precision import autocast
from dermflow.training.sampling import image_weights
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
    augmentation: str  # a key of augmentation.AUGMENTATIONS (options.AUGMENTATIONS)
    class_weights: bool
    monitor: str  # what early stopping and LR-on-plateau watch (selection.MONITORS)
    select: str  # the validation column whose best epoch is kept (selection.MONITORS)
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


@dataclass
class FitResult:
    """The selected weights and the per-epoch record."""

    state: dict[str, torch.Tensor]
    best_epoch: int
    history: pd.DataFrame
    select: str  # the history column that picked best_epoch
    best_score: float  # its value there

    def improves_on(self, other: FitResult) -> bool:
        """Whether this run's kept epoch beats ``other``'s (a tie keeps ``other``)."""
        return Monitor(self.select).better(self.best_score, other.best_score)


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


# Adam adds weight decay to the gradient (the papers' Keras Adam); AdamW decouples it
OPTIMIZERS: dict[str, type[torch.optim.Optimizer]] = {
    "adam": torch.optim.Adam, "adamw": torch.optim.AdamW}


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """The config's optimizer (OPTIMIZERS) over what learns."""
    kind = OPTIMIZERS[cfg.optimizer]
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


class ClassifierTrainer(Trainer):
    """The supervised epochs of ``fit``: one hook per step, each short enough to read alone."""

    log = log

    def __init__(self, model: torch.nn.Module, data: ImageTensor, train_idx: np.ndarray,
                 val_idx: np.ndarray, cfg: TrainConfig, checkpoint: Path | None,
                 optimizer: torch.optim.Optimizer) -> None:
        labels = data.labels.cpu().numpy()
        super().__init__(
            epochs=cfg.epochs, seed=cfg.seed, device=data.device,
            positions=torch.tensor(train_idx),  # a copy: pandas may hand out read-only arrays
            weights=(image_weights(labels[train_idx], cfg.sampling_power)
                     if cfg.sampling == "balanced" else None),
            epoch_images=cfg.epoch_images, checkpoint=checkpoint, run_id=cfg.fingerprint(),
            select=cfg.select)
        self.model, self.data, self.val_idx, self.cfg = model, data, val_idx, cfg
        self.labels, self.optimizer = labels, optimizer
        self.base_lrs = [group["lr"] for group in optimizer.param_groups]
        self.schedule = resolve(cfg.lr_schedule, cfg.plateau_patience)
        self.steps = steps_per_epoch(cfg.epoch_images or len(train_idx), cfg.batch_size)
        self.total_steps = cfg.epochs * self.steps
        self.warmup_steps = round(cfg.lr_warmup_epochs * self.steps)
        self.ema = EMA(model, cfg.ema) if cfg.ema else None
        self.watched = Monitor(cfg.monitor)  # what early stopping and the plateau watch
        self.plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="min" if self.watched.lower else "max", factor=cfg.plateau_factor,
            patience=max(cfg.plateau_patience - 1, 0))
        self.weight = self.loss_weights(train_idx)
        self.step_model: torch.nn.Module = model  # what a training step calls
        self.rank, self.world, self.distributed = 0, 1, False

    def loss_weights(self, train_idx: np.ndarray) -> torch.Tensor | None:
        """Inverse class frequencies of the training split when ``class_weights`` is on."""
        if not self.cfg.class_weights:
            return None
        n_classes = int(getattr(self.model, "num_classes", self.labels.max() + 1))
        counts = np.bincount(self.labels[train_idx], minlength=n_classes).astype(np.float64)
        return torch.tensor(len(train_idx) / (n_classes * np.maximum(counts, 1)),
                            dtype=torch.float32, device=self.device)

    def prepare(self) -> None:
        """DDP in any process group (a one-process one too), then torch.compile if asked."""
        self.rank, self.world = rank_world()
        if self.cfg.batch_size % self.world:
            raise ValueError(f"batch_size {self.cfg.batch_size} does not split over "
                             f"{self.world} GPUs")
        self.distributed = in_process_group()
        if self.distributed:
            if self.device.type == "cuda":  # batch statistics over the global batch, as on one GPU
                torch.nn.SyncBatchNorm.convert_sync_batchnorm(self.model)  # swaps BN in place
            self.step_model = DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        if self.cfg.compile:
            self.step_model = torch.compile(self.step_model)

    def stop_early(self, epoch: int) -> bool:
        patience, best = self.cfg.patience, self.watched.epoch
        if patience and best >= 0 and epoch - best > patience:
            log.info("early stop: no %s gain for %d epochs", self.cfg.monitor, patience)
            return True
        return False

    def train_epoch(self, epoch: int, order: torch.Tensor, generator: torch.Generator) -> Row:
        self.model.train()
        started = time.perf_counter()
        loss_sum = torch.zeros((), device=self.device)
        seen = stepped = 0
        for step, chunk in enumerate(batches(order, self.cfg.batch_size, drop_last=True),
                                     start=epoch * self.steps):
            loss = self.train_step(chunk, step, generator)
            stepped += 1
            loss_sum += loss.detach() * len(chunk)
            seen += len(chunk)
        if self.distributed:
            torch.distributed.all_reduce(loss_sum)
            loss_sum /= self.world
        train_loss = float(loss_sum) / max(seen, 1)
        elapsed = time.perf_counter() - started
        return {"train_loss": train_loss, "images_per_s": seen / elapsed, "seconds": elapsed,
                "lr": self.optimizer.param_groups[0]["lr"],
                "optimizer_steps": stepped, "images_seen": seen}  # the global batches trained

    def train_step(self, chunk: torch.Tensor, step: int,
                   generator: torch.Generator) -> torch.Tensor:
        """One optimizer step on the global batch ``chunk`` (this rank's share of it)."""
        cfg = self.cfg
        x, y = self.data.batch(chunk, generator if cfg.augment else None, cfg.augmentation)
        if self.world > 1:  # the same global batch on every rank; each trains on its share
            x, y = x[self.rank::self.world], y[self.rank::self.world]
        with autocast(self.device, cfg.precision):
            loss = cross_entropy(self.step_model(x), y, self.weight, cfg.label_smoothing)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.set_lr(step)
        self.optimizer.step()
        if self.ema is not None:
            self.ema.update()
        return loss

    def set_lr(self, step: int) -> None:
        """The per-batch curves (cosine, onecycle) set the rate of every step."""
        if self.schedule in CURVES:
            factor = lr_factor(self.schedule, step, self.total_steps, self.warmup_steps)
            for group, base in zip(self.optimizer.param_groups, self.base_lrs, strict=True):
                group["lr"] = base * factor

    def validate(self, order: torch.Tensor, generator: torch.Generator) -> Row:
        """Scores of the kept network on val (the EMA's norms recomputed first)."""
        cfg = self.cfg
        if self.ema is not None:  # the whole batch on every rank: the averages stay equal
            with autocast(self.device, cfg.precision):
                self.ema.recompute_norms(self.model, (
                    self.data.batch(chunk, generator if cfg.augment else None,
                                    cfg.augmentation)[0]
                    for chunk in batches(order[:NORM_IMAGES], cfg.batch_size, drop_last=True)))
        probs = predict(self.kept(), self.data, self.val_idx, evaluation_batch(cfg.batch_size),
                        cfg.precision)
        val = scores(self.labels[self.val_idx], probs)
        return {**{f"val_{k}": v for k, v in val.items()},
                "val_loss": log_loss(self.labels[self.val_idx], probs)}

    def kept(self) -> torch.nn.Module:
        """The weights' moving average when on, else the model itself."""
        return self.ema.model if self.ema is not None else self.model

    def end_epoch(self, epoch: int, row: Row) -> None:
        self.watched.update(row, epoch)
        if self.schedule == "plateau":
            self.plateau.step(row[self.cfg.monitor])
        log.info("epoch %d/%d loss %.4f val loss %.4f macro-F1 %.4f bal-acc %.4f acc %.4f | "
                 "lr %.2g | %.0f img/s", epoch + 1, self.cfg.epochs, row["train_loss"],
                 row["val_loss"], row["val_macro_f1"], row["val_balanced_accuracy"],
                 row["val_accuracy"], row["lr"], row["images_per_s"])

    def state(self) -> dict[str, Any]:
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "watched": self.watched.value, "watched_epoch": self.watched.epoch,
                "plateau": self.plateau.state_dict(),
                "ema": self.ema.state_dict() if self.ema is not None else None}

    def load(self, saved: dict[str, Any]) -> None:
        self.model.load_state_dict(saved["model"])
        self.optimizer.load_state_dict(saved["optimizer"])
        self.watched.value, self.watched.epoch = saved["watched"], saved["watched_epoch"]
        self.plateau.load_state_dict(saved["plateau"])
        if self.ema is not None:
            self.ema.load_state_dict(saved["ema"])


def fit(model: torch.nn.Module, data: ImageTensor, train_idx: np.ndarray, val_idx: np.ndarray,
        cfg: TrainConfig, checkpoint: Path | None = None,
        optimizer_factory: Callable[[torch.nn.Module], torch.optim.Optimizer] | None = None,
        ) -> FitResult:
    """Train, keep the epoch with the best validation ``cfg.select``, checkpoint every epoch."""
    model.to(data.device, memory_format=torch.channels_last)
    optimizer = optimizer_factory(model) if optimizer_factory else make_optimizer(model, cfg)
    trainer = ClassifierTrainer(model, data, train_idx, val_idx, cfg, checkpoint, optimizer)
    history = trainer.run()
    if trainer.best_state is None:
        raise RuntimeError("training ran no epoch: check epochs and the training split")
    return FitResult(trainer.best_state, trainer.best.epoch + 1, pd.DataFrame(history),
                     cfg.select, trainer.best.value)
