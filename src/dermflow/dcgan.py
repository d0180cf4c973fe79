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

import torch
import torch.nn.functional as F
from torch import nn

MAX_WIDTH = 1024


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


def resize(x: torch.Tensor, size: int) -> torch.Tensor:
    """Square images to ``size`` (antialiased when shrinking); unchanged when already there."""
    if x.shape[-1] == size and x.shape[-2] == size:
        return x
    return F.interpolate(x, size=(size, size), mode="bilinear", antialias=True,
                         align_corners=False)
