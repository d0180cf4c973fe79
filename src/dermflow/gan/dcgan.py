"""Paper 003's DermaGAN: a class-conditional DCGAN (latent 512 → 64x64), trained with BCE.

Generator: the latent vector and a one-hot class, as a 1x1 map, through transposed
convolutions (4x4 first, then doubling with BatchNorm + ReLU) to a tanh image.
Discriminator: the image with one one-hot class map per class, strided
convolutions (BatchNorm + LeakyReLU after the first) down to 4x4, then one logit
(the sigmoid is in the loss). Widths double per scale from ``channels``, so the
paper's 512-channel first layer is ``channels`` 64 at 64 px. The class inputs are
what makes it conditional: the paper trains it on four classes at once without
saying how the class enters; concatenation is the standard conditional DCGAN.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from dermflow.gan.step import AdversarialStep, GanConfig, resize
from dermflow.labels import CLASSES
from dermflow.training.precision import autocast

MAX_WIDTH = 1024
PANELS = {"losses": ("loss_d", "loss_g"),  # loss curves: panel title → history columns
          "discriminator output": ("d_real", "d_fake")}


def _widths(channels: int, size: int) -> list[int]:
    """Widths of the 4x4, 8x8, ... maps up to size/2, widest first."""
    scales = int(math.log2(size)) - 2
    if 2 ** (scales + 2) != size or scales < 1:
        raise ValueError(f"DCGAN image size must be a power of two >= 8, not {size}")
    return [min(channels * 2 ** k, MAX_WIDTH) for k in reversed(range(scales))]


class DcganGenerator(nn.Module):
    """z (N x latent) and class → N x 3 x size x size in [-1, 1]."""

    def __init__(self, n_classes: int, *, latent_dim: int = 512, channels: int = 64,
                 size: int = 64) -> None:
        super().__init__()
        self.latent_dim, self.n_classes, self.size = latent_dim, n_classes, size
        widths = _widths(channels, size)
        layers: list[nn.Module] = [nn.ConvTranspose2d(latent_dim + n_classes, widths[0], 4, 1, 0,
                                                      bias=False),
                                   nn.BatchNorm2d(widths[0]), nn.ReLU(inplace=True)]
        for before, out in zip(widths, widths[1:], strict=False):
            layers += [nn.ConvTranspose2d(before, out, 4, 2, 1, bias=False), nn.BatchNorm2d(out),
                       nn.ReLU(inplace=True)]
        layers += [nn.ConvTranspose2d(widths[-1], 3, 4, 2, 1), nn.Tanh()]
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        onehot = F.one_hot(label, self.n_classes).to(z.dtype)
        return self.net(torch.cat([z, onehot], 1)[:, :, None, None])


class DcganDiscriminator(nn.Module):
    """(image, class) → one real/fake logit per image."""

    def __init__(self, n_classes: int, *, channels: int = 64, size: int = 64) -> None:
        super().__init__()
        self.n_classes, self.size = n_classes, size
        widths = list(reversed(_widths(channels, size)))
        layers: list[nn.Module] = [nn.Conv2d(3 + n_classes, widths[0], 4, 2, 1),
                                   nn.LeakyReLU(0.2, inplace=True)]
        for before, out in zip(widths, widths[1:], strict=False):
            layers += [nn.Conv2d(before, out, 4, 2, 1, bias=False), nn.BatchNorm2d(out),
                       nn.LeakyReLU(0.2, inplace=True)]
        self.features = nn.Sequential(*layers)
        self.logit = nn.Conv2d(widths[-1], 1, 4, 1, 0)

    def _hidden(self, image: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        image = resize(image, self.size)
        maps = F.one_hot(label, self.n_classes).to(image.dtype)[:, :, None, None].expand(
            -1, -1, self.size, self.size)
        return self.features(torch.cat([image, maps], 1))

    def forward(self, image: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        return self.logit(self._hidden(image, label)).flatten().float()

    def score(self, image: torch.Tensor, label: torch.Tensor,
              ) -> tuple[torch.Tensor, torch.Tensor]:
        """Realism (the logit) and the last hidden layer, pooled, per image."""
        h = self._hidden(image, label)
        return self.logit(h).flatten().float(), h.mean(dim=(2, 3)).float()


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


def networks(settings: dict[str, Any], image_size: int,
             ) -> tuple[DcganGenerator, DcganDiscriminator]:
    """Generator and discriminator as ``gan.dcgan`` describes them (they work at its size)."""
    dc = settings["dcgan"]
    return (DcganGenerator(len(CLASSES), latent_dim=dc["latent_dim"], channels=dc["channels"],
                           size=dc["size"]),
            DcganDiscriminator(len(CLASSES), channels=dc["channels"], size=dc["size"]))


def train_config(settings: dict[str, Any], common: dict[str, Any]) -> GanConfig:
    """The run's GanConfig from ``gan.dcgan``: one learning rate for both networks, no
    C'GAN-only loss terms."""
    dc = settings["dcgan"]
    return GanConfig(batch_size=dc["batch_size"], lr_g=dc["lr"], lr_d=dc["lr"],
                     betas=tuple(dc["betas"]), gp_weight=0, identity_weight=0,
                     diversity_weight=0, **common)


Step = DcganStep
