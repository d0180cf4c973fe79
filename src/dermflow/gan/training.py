"""train_gan: the generator (``gan.kind``, dermflow.gan.registry) trained on the protocol's
training pool.

The loop is the shared engine (dermflow.training.engine), the same for every kind: a
GanTrainer's epoch hands each batch to the kind's step class, which does one critic (or
discriminator) update and one generator update. Minority classes are oversampled (each
epoch draws its length from the pool with class weights 1/f: dermflow.training.sampling at
power 1). Like the classifier loop, the data stay on the device, every epoch is seeded
from (seed, epoch) and checkpointed, so a killed job resumes and reaches the same
generator. The last epoch's generator is kept: the paper names no selection criterion and
a WGAN's losses do not supply one. The generator file is a dermflow model file
(dermflow.torchfile): the generator's ``state_dict`` with the critic's beside it.
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

from dermflow.atomic import write_csv
from dermflow.data.cache import load_split_cache, read_array
from dermflow.data.split import training_pool
from dermflow.errors import DatasetError
from dermflow.figures import epoch_axis, plt, save
from dermflow.gan.networks import attention_tensor, build_networks, gather_attention
from dermflow.gan.registry import family, generator_kind
from dermflow.gan.step import TO_UNIT, AdversarialStep, GanConfig
from dermflow.labels import CLASSES
from dermflow.torchfile import save_model
from dermflow.training.batches import ImageTensor, batches
from dermflow.training.engine import Row, Trainer, fingerprint
from dermflow.training.sampling import image_weights

log = logging.getLogger(__name__)

def make_step(settings: dict[str, Any], generator: torch.nn.Module, critic: torch.nn.Module,
              cfg: GanConfig) -> AdversarialStep:
    return family(settings["kind"]).Step(generator, critic, cfg)


class GanTrainer(Trainer):
    """The adversarial epochs of ``fit_gan``: the kind's ``step`` on every batch of the pool."""

    log = log

    def __init__(self, step: AdversarialStep, data: ImageTensor, attention: torch.Tensor | None,
                 pool: np.ndarray, cfg: GanConfig, checkpoint: Path | None) -> None:
        labels = data.labels.cpu().numpy()[pool]
        super().__init__(epochs=cfg.epochs, seed=cfg.seed, device=data.device,
                         positions=torch.as_tensor(pool),
                         weights=image_weights(labels, 1.0) if cfg.oversample else None,
                         epoch_images=None, checkpoint=checkpoint, run_id=fingerprint(cfg))
        self.step, self.data, self.attention, self.cfg = step, data, attention, cfg

    def train_epoch(self, epoch: int, order: torch.Tensor, generator: torch.Generator) -> Row:
        step = self.step
        step.g.train()
        step.d.train()
        sums = {k: torch.zeros((), device=self.device) for k in step.losses}
        seen, started = 0, time.perf_counter()
        for rows in batches(order, self.cfg.batch_size, drop_last=True):
            x, y = self.data.batch(rows)
            losses = step(x, gather_attention(self.attention, rows, self.device), y, generator)
            for k, v in losses.items():
                sums[k] += v * len(rows)
            seen += len(rows)
        elapsed = time.perf_counter() - started
        return {**{k: float(v) / max(seen, 1) for k, v in sums.items()},
                "images_per_s": seen / elapsed, "seconds": elapsed}

    def end_epoch(self, epoch: int, row: Row) -> None:
        log.info("epoch %d/%d %s | %.0f img/s", epoch + 1, self.cfg.epochs,
                 " ".join(f"{k} {row[k]:.4f}" for k in self.step.losses), row["images_per_s"])

    def state(self) -> dict[str, Any]:
        return {"state": self.step.state()}

    def load(self, saved: dict[str, Any]) -> None:
        self.step.load(saved["state"])


def fit_gan(step: AdversarialStep, data: ImageTensor, attention: torch.Tensor | None,
            pool: np.ndarray,
            cfg: GanConfig, checkpoint: Path | None = None) -> pd.DataFrame:
    """Train for cfg.epochs (resuming from ``checkpoint``); the per-epoch loss history."""
    step.g.to(data.device)
    step.d.to(data.device)
    history = GanTrainer(step, data, attention, pool, cfg, checkpoint).run()
    if not history:
        raise RuntimeError("GAN training ran no epoch: check gan.epochs and the training pool")
    return pd.DataFrame(history)


def plot_losses(history: pd.DataFrame, kind: str, out_png: str | Path) -> None:
    """The loss curves of the generator kind, one panel per group."""
    panels = family(kind).PANELS
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3.2), squeeze=False,
                             layout="constrained")
    for ax, (title, columns) in zip(axes[0], panels.items(), strict=True):
        for column in columns:
            ax.plot(history["epoch"], history[column], label=column.replace("_", " "))
        ax.set_title(title)
        epoch_axis(ax)
        ax.legend()
    fig.suptitle(f"{kind} generator: losses per epoch")
    save(fig, out_png)


def gan_config(settings: dict[str, Any], *, precision: str, seed: int,
               extra: dict[str, Any]) -> GanConfig:
    """The run's GanConfig: what every kind shares, then the kind's own keys."""
    common = {"epochs": settings["epochs"], "oversample": settings["oversample"],
              "precision": precision, "seed": seed, "extra": {**settings, **extra}}
    return family(settings["kind"]).train_config(settings, common)


def train_gan(cache_npy: str, index_csv: str, split_csv: str, attention_npy: str | None, *,
              protocol: str, settings: dict[str, Any], device: torch.device, seed: int,
              precision: str, checkpoint_dir: str | Path, out_generator: str, out_history: str,
              out_curve: str) -> None:
    """Train the generator on the training pool's images and classes (and, for the C'GAN,
    their attention maps); write generator and critic together."""
    images, index = load_split_cache(cache_npy, index_csv, split_csv)
    maps = None
    if generator_kind(settings["kind"]).needs_attention:
        if attention_npy is None:
            raise ValueError(f"gan.kind {settings['kind']} needs the attention maps")
        maps = read_array(attention_npy, rule="extract_attention")
        if maps.shape != images.shape[:3]:
            raise DatasetError(f"{attention_npy}: attention maps {maps.shape} do not match the "
                               f"image cache {images.shape[:3]}; re-run extract_attention")
    pool = np.flatnonzero(training_pool(index, protocol).to_numpy())
    size = int(images.shape[1])
    torch.manual_seed(seed)
    generator, critic = build_networks(settings, size)
    cfg = gan_config(settings, precision=precision, seed=seed,
                     extra={"protocol": protocol, "images": int(images.shape[0]), "size": size})
    data = ImageTensor(images, index["label"].to_numpy(), device, *TO_UNIT)
    attention = attention_tensor(maps, device, data.resident) if maps is not None else None
    log.info("%s (G %.1fM, D %.1fM parameters) on %d training-pool images (%s), device %s",
             settings["kind"], sum(p.numel() for p in generator.parameters()) / 1e6,
             sum(p.numel() for p in critic.parameters()) / 1e6, len(pool), protocol, device)
    checkpoint = Path(checkpoint_dir) / "last.pt"
    step = make_step(settings, generator, critic, cfg)
    history = fit_gan(step, data, attention, pool, cfg, checkpoint)
    save_model(generator, out_generator, kind=settings["kind"], critic=critic.state_dict(),
               settings=settings, image_size=size, classes=list(CLASSES), protocol=protocol,
               train_config=asdict(cfg))
    write_csv(history, out_history)
    plot_losses(history, settings["kind"], out_curve)
    checkpoint.unlink(missing_ok=True)
