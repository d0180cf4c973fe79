"""train_gan: the C'GAN trained with WGAN-GP on the protocol's training pool.

Each step runs the generator once on the batch twice over (two noise draws per
source image). The first half feeds the critic update; then the generator loss is
adversarial + identity (L1 to the source) + diversity (the two draws of the same
source and class pushed apart, mode-seeking style). The paper leaves the pairing
open ("successive samples of the same class"); pairing draws of the same source
is what makes the noise matter, where pairing different sources would only fight
the identity term. One critic update per generator update, with the paper's
two learning rates (TTUR) instead of the original WGAN-GP's five critic steps.

Minority classes are oversampled (each epoch draws its length from the pool with
class-balanced probabilities). Like the classifier loop, the data stay on the
device, every epoch is seeded from (seed, epoch) and checkpointed, so a killed
job resumes and reaches the same generator. The last epoch's generator is kept:
the paper names no selection criterion and a WGAN's losses do not supply one.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from dermflow.atomic import atomic_path, write_csv
from dermflow.baseline import load_split_cache
from dermflow.batches import ImageTensor, batches
from dermflow.cgan import Critic, Generator
from dermflow.errors import DatasetError
from dermflow.figures import plt, save
from dermflow.labels import CLASSES
from dermflow.split import training_pool
from dermflow.train import autocast, fingerprint, save_checkpoint, seed_epoch

log = logging.getLogger(__name__)

TO_UNIT = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))  # ImageTensor mean/std that map [0, 1] to [-1, 1]
LOSSES = ("loss_d", "loss_g", "adversarial", "identity", "diversity", "gradient_penalty",
          "wasserstein")


@dataclass(frozen=True)
class GanConfig:
    """What defines a GAN run (its hash names the checkpoint it may resume)."""

    epochs: int = 40
    batch_size: int = 32
    lr_g: float = 1e-4
    lr_d: float = 4e-4
    betas: tuple[float, float] = (0.0, 0.9)
    gp_weight: float = 10.0
    identity_weight: float = 10.0
    diversity_weight: float = 0.1
    oversample: bool = True
    precision: str = "bf16"
    seed: int = 0
    extra: dict[str, Any] = field(default_factory=dict)  # networks and data, for the hash


def build_networks(settings: dict[str, Any], image_size: int) -> tuple[Generator, Critic]:
    """Generator and critic as the ``gan`` config section describes them."""
    generator = Generator(image_size, len(CLASSES), latent_dim=settings["latent_dim"],
                          embed_dim=settings["embed_dim"], channels=settings["channels"],
                          depth=settings["depth"], res_blocks=settings["res_blocks"])
    critic = Critic(len(CLASSES), channels=settings["critic_channels"],
                    depth=settings["critic_depth"])
    return generator, critic


def epoch_order(labels: np.ndarray, oversample: bool, generator: torch.Generator) -> torch.Tensor:
    """Positions into the pool for one epoch: class-balanced draws, or a permutation."""
    if not oversample:
        return torch.randperm(len(labels), generator=generator)
    counts = np.bincount(labels, minlength=len(CLASSES))
    weights = torch.as_tensor(1.0 / counts[labels], dtype=torch.float64)
    return torch.multinomial(weights, len(labels), replacement=True, generator=generator)


class GanStep:
    """One critic and one generator update; returns the losses as device tensors (no sync)."""

    def __init__(self, generator: Generator, critic: Critic, cfg: GanConfig) -> None:
        self.g, self.d, self.cfg = generator, critic, cfg
        self.opt_g = torch.optim.Adam(generator.parameters(), lr=cfg.lr_g, betas=cfg.betas)
        self.opt_d = torch.optim.Adam(critic.parameters(), lr=cfg.lr_d, betas=cfg.betas)

    def __call__(self, x: torch.Tensor, attention: torch.Tensor, label: torch.Tensor,
                 generator: torch.Generator) -> dict[str, torch.Tensor]:
        cfg, n, device = self.cfg, len(x), x.device
        z = torch.randn(2 * n, self.g.latent_dim, generator=generator, device=device)
        x2, a2, y2 = torch.cat([x, x]), torch.cat([attention, attention]), torch.cat([label, label])
        with autocast(device, cfg.precision):
            fake = self.g(x2, a2, z, y2)
        # critic: real vs the first draw, plus the gradient penalty on interpolates
        self.d.requires_grad_(True)
        detached = fake[:n].detach()
        eps = torch.rand(n, 1, 1, 1, generator=generator, device=device)
        mix = (eps * x + (1 - eps) * detached).requires_grad_(True)
        with autocast(device, cfg.precision):
            d_real, d_fake = self.d(x, attention, label), self.d(detached, attention, label)
            d_mix = self.d(mix, attention, label)
        grad, = torch.autograd.grad(d_mix.sum(), mix, create_graph=True)
        penalty = ((grad.flatten(1).norm(dim=1) - 1) ** 2).mean()
        wasserstein = d_real.mean() - d_fake.mean()
        loss_d = -wasserstein + cfg.gp_weight * penalty
        self.opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        self.opt_d.step()
        # generator: fool the critic, stay near the source, keep the two draws apart
        self.d.requires_grad_(False)
        with autocast(device, cfg.precision):
            adversarial = -self.d(fake, a2, y2).mean()
        identity = (fake - x2).abs().mean()
        diversity = -(fake[:n] - fake[n:]).abs().mean()
        loss_g = adversarial + cfg.identity_weight * identity + cfg.diversity_weight * diversity
        self.opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        self.opt_g.step()
        return {"loss_d": loss_d.detach(), "loss_g": loss_g.detach(),
                "adversarial": adversarial.detach(), "identity": identity.detach(),
                "diversity": diversity.detach(), "gradient_penalty": penalty.detach(),
                "wasserstein": wasserstein.detach()}

    def state(self) -> dict[str, Any]:
        return {"generator": self.g.state_dict(), "critic": self.d.state_dict(),
                "opt_g": self.opt_g.state_dict(), "opt_d": self.opt_d.state_dict()}

    def load(self, state: dict[str, Any]) -> None:
        self.g.load_state_dict(state["generator"])
        self.d.load_state_dict(state["critic"])
        self.opt_g.load_state_dict(state["opt_g"])
        self.opt_d.load_state_dict(state["opt_d"])


def attention_tensor(maps: np.ndarray, device: torch.device, resident: bool) -> torch.Tensor:
    """The float16 attention maps, on the device when the images are."""
    tensor = torch.from_numpy(np.array(maps, dtype=np.float16))
    return tensor.to(device) if resident and device.type == "cuda" else tensor


def gather_attention(maps: torch.Tensor, rows: torch.Tensor, device: torch.device) -> torch.Tensor:
    """N x 1 x S x S float attention for cache rows."""
    return maps[rows.to(maps.device)].to(device, non_blocking=True).float().unsqueeze(1)


def fit_gan(step: GanStep, data: ImageTensor, attention: torch.Tensor, pool: np.ndarray,
            cfg: GanConfig, checkpoint: Path | None = None) -> pd.DataFrame:
    """Train for cfg.epochs (resuming from ``checkpoint``); the per-epoch loss history."""
    device = data.device
    step.g.to(device)
    step.d.to(device)
    history: list[dict[str, float]] = []
    start, run_id = 0, fingerprint(cfg)
    if checkpoint is not None and checkpoint.is_file():
        saved = torch.load(checkpoint, map_location=device, weights_only=False)
        if saved["fingerprint"] == run_id:
            step.load(saved["state"])
            history, start = saved["history"], saved["epoch"]
            log.info("resuming from %s after epoch %d", checkpoint, start)
        else:
            log.info("ignoring checkpoint %s: it belongs to another configuration", checkpoint)
    labels = data.labels.cpu().numpy()[pool]
    pool_tensor = torch.as_tensor(pool)
    for epoch in range(start, cfg.epochs):
        host_gen, device_gen = seed_epoch(cfg.seed, epoch, device)
        order = pool_tensor[epoch_order(labels, cfg.oversample, host_gen)]
        step.g.train()
        step.d.train()
        sums = {k: torch.zeros((), device=device) for k in LOSSES}
        seen, started = 0, time.perf_counter()
        for rows in batches(order, cfg.batch_size, drop_last=True):
            x, y = data.batch(rows)
            losses = step(x, gather_attention(attention, rows, device), y, device_gen)
            for k, v in losses.items():
                sums[k] += v * len(rows)
            seen += len(rows)
        elapsed = time.perf_counter() - started
        row = {"epoch": epoch + 1, **{k: float(v) / max(seen, 1) for k, v in sums.items()},
               "images_per_s": seen / elapsed, "seconds": elapsed}
        history.append(row)
        log.info("epoch %d/%d D %.4f G %.4f (adv %.4f id %.4f div %.4f gp %.4f W %.4f) | "
                 "%.0f img/s", epoch + 1, cfg.epochs, row["loss_d"], row["loss_g"],
                 row["adversarial"], row["identity"], row["diversity"],
                 row["gradient_penalty"], row["wasserstein"], row["images_per_s"])
        if checkpoint is not None:
            save_checkpoint(checkpoint, {"fingerprint": run_id, "epoch": epoch + 1,
                                         "state": step.state(), "history": history})
    if not history:
        raise RuntimeError("GAN training ran no epoch: check gan.epochs and the training pool")
    return pd.DataFrame(history)


def load_generator(path: str | Path, device: torch.device) -> tuple[Generator, dict[str, Any]]:
    """A generator written by train_gan, on ``device``, in eval mode."""
    saved = torch.load(path, map_location="cpu", weights_only=False)
    generator, _ = build_networks(saved["settings"], saved["image_size"])
    generator.load_state_dict(saved.pop("state_dict"))
    return generator.to(device).eval(), saved


def plot_losses(history: pd.DataFrame, out_png: str | Path) -> None:
    """Critic and generator losses, and the critic's Wasserstein estimate, per epoch."""
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.2))
    axes[0].plot(history["epoch"], history["loss_d"], label="critic")
    axes[0].plot(history["epoch"], history["loss_g"], label="generator")
    axes[0].set_title("losses")
    axes[0].legend()
    for k in ("adversarial", "identity", "diversity"):
        axes[1].plot(history["epoch"], history[k], label=k)
    axes[1].set_title("generator terms")
    axes[1].legend()
    axes[2].plot(history["epoch"], history["wasserstein"], label="Wasserstein estimate")
    axes[2].plot(history["epoch"], history["gradient_penalty"], label="gradient penalty")
    axes[2].set_title("critic")
    axes[2].legend()
    for ax in axes:
        ax.set_xlabel("epoch")
    save(fig, out_png)


def train_gan(cache_npy: str, index_csv: str, split_csv: str, attention_npy: str, *,
              protocol: str, settings: dict[str, Any], device: torch.device, seed: int,
              precision: str, checkpoint_dir: str | Path, out_generator: str, out_history: str,
              out_curve: str) -> None:
    """Train the C'GAN on the training pool's (image, attention, class) triples."""
    images, index = load_split_cache(cache_npy, index_csv, split_csv)
    maps = np.load(attention_npy, mmap_mode="r")
    if maps.shape != images.shape[:3]:
        raise DatasetError(f"{attention_npy}: attention maps {maps.shape} do not match the image "
                           f"cache {images.shape[:3]}; re-run extract_attention")
    pool = np.flatnonzero(training_pool(index, protocol).to_numpy())
    size = int(images.shape[1])
    torch.manual_seed(seed)
    generator, critic = build_networks(settings, size)
    cfg = GanConfig(
        epochs=settings["epochs"], batch_size=settings["batch_size"], lr_g=settings["lr_g"],
        lr_d=settings["lr_d"], betas=tuple(settings["betas"]), gp_weight=settings["gp_weight"],
        identity_weight=settings["identity_weight"],
        diversity_weight=settings["diversity_weight"], oversample=settings["oversample"],
        precision=precision, seed=seed,
        extra={**settings, "protocol": protocol, "images": int(images.shape[0]), "size": size})
    data = ImageTensor(images, index["label"].to_numpy(), device, *TO_UNIT)
    attention = attention_tensor(maps, device, data.resident)
    log.info("C'GAN (G %.1fM, D %.1fM parameters) on %d training-pool images (%s), device %s",
             sum(p.numel() for p in generator.parameters()) / 1e6,
             sum(p.numel() for p in critic.parameters()) / 1e6, len(pool), protocol, device)
    checkpoint = Path(checkpoint_dir) / "last.pt"
    step = GanStep(generator, critic, cfg)
    history = fit_gan(step, data, attention, pool, cfg, checkpoint)
    with atomic_path(out_generator) as tmp:
        torch.save({"state_dict": generator.state_dict(), "settings": settings,
                    "image_size": size, "classes": list(CLASSES), "protocol": protocol,
                    "train_config": asdict(cfg)}, tmp)
    write_csv(history, out_history)
    plot_losses(history, out_curve)
    checkpoint.unlink(missing_ok=True)
