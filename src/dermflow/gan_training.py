"""train_gan: the generator (``gan.kind``) trained on the protocol's training pool.

``cgan``: the C'GAN trained with WGAN-GP. ``dcgan``: paper 003's DermaGAN, a
class-conditional DCGAN with the standard BCE losses, on the images resized to its
size.

A C'GAN step runs the generator once on the batch twice over (two noise draws per
source image). The first half feeds the critic update; then the generator loss is
adversarial + identity (L1 to the source) + diversity (the two draws of the same
source and class pushed apart, mode-seeking style). The paper leaves the pairing
open ("successive samples of the same class"); pairing draws of the same source
is what makes the noise matter, where pairing different sources would only fight
the identity term. One critic update per generator update, with the paper's
two learning rates (TTUR) instead of the original WGAN-GP's five critic steps.

For both kinds, minority classes are oversampled (each epoch draws its length from
the pool with class-balanced probabilities). Like the classifier loop, the data stay on the
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
import torch.nn.functional as F

from dermflow.atomic import atomic_path, write_csv
from dermflow.baseline import load_split_cache
from dermflow.batches import ImageTensor, batches
from dermflow.cgan import Critic, Generator
from dermflow.dcgan import DcganDiscriminator, DcganGenerator, resize
from dermflow.errors import DatasetError
from dermflow.figures import plt, save
from dermflow.labels import CLASSES
from dermflow.split import training_pool
from dermflow.train import autocast, fingerprint, save_checkpoint, seed_epoch

log = logging.getLogger(__name__)

TO_UNIT = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))  # ImageTensor mean/std that map [0, 1] to [-1, 1]
PANELS = {  # loss curves per kind: panel title → history columns
    "cgan": {"losses": ("loss_d", "loss_g"),
             "generator terms": ("adversarial", "identity", "diversity"),
             "critic": ("wasserstein", "gradient_penalty")},
    "dcgan": {"losses": ("loss_d", "loss_g"), "discriminator output": ("d_real", "d_fake")},
}


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


def build_networks(settings: dict[str, Any], image_size: int,
                   ) -> tuple[torch.nn.Module, torch.nn.Module]:
    """Generator and critic (discriminator) as the ``gan`` config section describes them."""
    if settings["kind"] == "dcgan":
        dc = settings["dcgan"]
        return (DcganGenerator(len(CLASSES), latent_dim=dc["latent_dim"], channels=dc["channels"],
                               size=dc["size"]),
                DcganDiscriminator(len(CLASSES), channels=dc["channels"], size=dc["size"]))
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


class AdversarialStep:
    """One critic and one generator update; returns the losses as device tensors (no sync)."""

    losses: tuple[str, ...] = ()

    def __init__(self, generator: torch.nn.Module, critic: torch.nn.Module,
                 cfg: GanConfig) -> None:
        self.g, self.d, self.cfg = generator, critic, cfg
        self.opt_g = torch.optim.Adam(generator.parameters(), lr=cfg.lr_g, betas=cfg.betas)
        self.opt_d = torch.optim.Adam(critic.parameters(), lr=cfg.lr_d, betas=cfg.betas)

    def __call__(self, x: torch.Tensor, attention: torch.Tensor | None, label: torch.Tensor,
                 generator: torch.Generator) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def state(self) -> dict[str, Any]:
        return {"generator": self.g.state_dict(), "critic": self.d.state_dict(),
                "opt_g": self.opt_g.state_dict(), "opt_d": self.opt_d.state_dict()}

    def load(self, state: dict[str, Any]) -> None:
        self.g.load_state_dict(state["generator"])
        self.d.load_state_dict(state["critic"])
        self.opt_g.load_state_dict(state["opt_g"])
        self.opt_d.load_state_dict(state["opt_d"])


class GanStep(AdversarialStep):
    """The C'GAN's WGAN-GP step (module docstring)."""

    losses = ("loss_d", "loss_g", "adversarial", "identity", "diversity", "gradient_penalty",
              "wasserstein")

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


class DcganStep(AdversarialStep):
    """One discriminator and one generator update with the non-saturating BCE losses."""

    losses = ("loss_d", "loss_g", "d_real", "d_fake")

    def __call__(self, x: torch.Tensor, attention: torch.Tensor | None, label: torch.Tensor,
                 generator: torch.Generator) -> dict[str, torch.Tensor]:
        cfg = self.cfg
        real = resize(x, self.g.size)
        z = torch.randn(len(x), self.g.latent_dim, generator=generator, device=x.device)
        with autocast(x.device, cfg.precision):
            fake = self.g(z, label).float()
            d_real, d_fake = self.d(real, label), self.d(fake.detach(), label)
        loss_d = (F.binary_cross_entropy_with_logits(d_real, torch.ones_like(d_real)) +
                  F.binary_cross_entropy_with_logits(d_fake, torch.zeros_like(d_fake)))
        self.opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        self.opt_d.step()
        with autocast(x.device, cfg.precision):
            d_gen = self.d(fake, label)
        loss_g = F.binary_cross_entropy_with_logits(d_gen, torch.ones_like(d_gen))
        self.opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        self.opt_g.step()
        return {"loss_d": loss_d.detach(), "loss_g": loss_g.detach(),
                "d_real": torch.sigmoid(d_real).mean().detach(),
                "d_fake": torch.sigmoid(d_fake).mean().detach()}


def make_step(settings: dict[str, Any], generator: torch.nn.Module, critic: torch.nn.Module,
              cfg: GanConfig) -> AdversarialStep:
    return (DcganStep if settings["kind"] == "dcgan" else GanStep)(generator, critic, cfg)


def attention_tensor(maps: np.ndarray, device: torch.device, resident: bool) -> torch.Tensor:
    """The float16 attention maps, on the device when the images are."""
    tensor = torch.from_numpy(np.array(maps, dtype=np.float16))
    return tensor.to(device) if resident and device.type == "cuda" else tensor


def gather_attention(maps: torch.Tensor | None, rows: torch.Tensor, device: torch.device,
                     ) -> torch.Tensor | None:
    """N x 1 x S x S float attention for cache rows (None for generators without it)."""
    if maps is None:
        return None
    return maps[rows.to(maps.device)].to(device, non_blocking=True).float().unsqueeze(1)


def fit_gan(step: AdversarialStep, data: ImageTensor, attention: torch.Tensor | None,
            pool: np.ndarray,
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
        sums = {k: torch.zeros((), device=device) for k in step.losses}
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
        log.info("epoch %d/%d %s | %.0f img/s", epoch + 1, cfg.epochs,
                 " ".join(f"{k} {row[k]:.4f}" for k in step.losses), row["images_per_s"])
        if checkpoint is not None:
            save_checkpoint(checkpoint, {"fingerprint": run_id, "epoch": epoch + 1,
                                         "state": step.state(), "history": history})
    if not history:
        raise RuntimeError("GAN training ran no epoch: check gan.epochs and the training pool")
    return pd.DataFrame(history)


def load_networks(path: str | Path, device: torch.device,
                  ) -> tuple[torch.nn.Module, torch.nn.Module, dict[str, Any]]:
    """The generator and critic written by train_gan, on ``device``, in eval mode."""
    saved = torch.load(path, map_location="cpu", weights_only=False)
    generator, critic = build_networks(saved["settings"], saved["image_size"])
    generator.load_state_dict(saved.pop("state_dict"))
    critic.load_state_dict(saved.pop("critic"))
    return generator.to(device).eval(), critic.to(device).eval(), saved


def plot_losses(history: pd.DataFrame, kind: str, out_png: str | Path) -> None:
    """The loss curves of the generator kind, one panel per group."""
    panels = PANELS[kind]
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3.2), squeeze=False)
    for ax, (title, columns) in zip(axes[0], panels.items(), strict=True):
        for column in columns:
            ax.plot(history["epoch"], history[column], label=column.replace("_", " "))
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.legend()
    save(fig, out_png)


def gan_config(settings: dict[str, Any], *, precision: str, seed: int,
               extra: dict[str, Any]) -> GanConfig:
    """The run's GanConfig: the C'GAN's keys, or the DCGAN's (one lr for both networks)."""
    common = {"epochs": settings["epochs"], "oversample": settings["oversample"],
              "precision": precision, "seed": seed, "extra": {**settings, **extra}}
    if settings["kind"] == "dcgan":
        dc = settings["dcgan"]
        return GanConfig(batch_size=dc["batch_size"], lr_g=dc["lr"], lr_d=dc["lr"],
                         betas=tuple(dc["betas"]), gp_weight=0, identity_weight=0,
                         diversity_weight=0, **common)
    return GanConfig(batch_size=settings["batch_size"], lr_g=settings["lr_g"],
                     lr_d=settings["lr_d"], betas=tuple(settings["betas"]),
                     gp_weight=settings["gp_weight"], identity_weight=settings["identity_weight"],
                     diversity_weight=settings["diversity_weight"], **common)


def train_gan(cache_npy: str, index_csv: str, split_csv: str, attention_npy: str | None, *,
              protocol: str, settings: dict[str, Any], device: torch.device, seed: int,
              precision: str, checkpoint_dir: str | Path, out_generator: str, out_history: str,
              out_curve: str) -> None:
    """Train the generator on the training pool's images and classes (and, for the C'GAN,
    their attention maps); write generator and critic together."""
    images, index = load_split_cache(cache_npy, index_csv, split_csv)
    maps = None
    if settings["kind"] == "cgan":
        if attention_npy is None:
            raise ValueError("the C'GAN needs the attention maps")
        maps = np.load(attention_npy, mmap_mode="r")
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
    with atomic_path(out_generator) as tmp:
        torch.save({"kind": settings["kind"], "state_dict": generator.state_dict(),
                    "critic": critic.state_dict(), "settings": settings, "image_size": size,
                    "classes": list(CLASSES), "protocol": protocol, "train_config": asdict(cfg)},
                   tmp)
    write_csv(history, out_history)
    plot_losses(history, settings["kind"], out_curve)
    checkpoint.unlink(missing_ok=True)
