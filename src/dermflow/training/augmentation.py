"""Augmentation policies applied on the training device, one batched op per batch.

Each policy draws every random number from the epoch's device generator, so a
resumed run augments exactly as one that never stopped. ``dermoscopy`` (the
default) and ``keras`` (paper 001's ImageDataGenerator) are the keys of
AUGMENTATIONS, which ``classifier.augmentation`` names.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def _uniform(n: int, low: float, high: float, generator: torch.Generator) -> torch.Tensor:
    return torch.rand(n, generator=generator, device=generator.device) * (high - low) + low


def augment(x: torch.Tensor, generator: torch.Generator, *, rotate: float = 180.0,
            scale: tuple[float, float] = (0.9, 1.1), shift: float = 0.05,
            jitter: float = 0.1) -> torch.Tensor:
    """Per-image random flips, rotation/scale/shift and colour jitter, as one batched op.

    Dermoscopy has no canonical orientation, so any rotation and both flips are
    label-preserving; reflection padding avoids black corners.
    """
    n = x.shape[0]
    angle = _uniform(n, -rotate, rotate, generator) * math.pi / 180
    zoom = _uniform(n, *scale, generator)
    flip_x = torch.where(_uniform(n, 0, 1, generator) < 0.5, -1.0, 1.0)
    flip_y = torch.where(_uniform(n, 0, 1, generator) < 0.5, -1.0, 1.0)
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    shift_x, shift_y = (_uniform(n, -shift, shift, generator) * 2 for _ in range(2))
    theta = torch.stack([  # rotation/zoom times flip, then shift (grid units span 2)
        torch.stack([cos * flip_x, -sin * flip_y, shift_x], 1),
        torch.stack([sin * flip_x, cos * flip_y, shift_y], 1),
    ], 1).to(x.dtype)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    brightness = _uniform(n, 1 - jitter, 1 + jitter, generator).view(n, 1, 1, 1)
    contrast = _uniform(n, 1 - jitter, 1 + jitter, generator).view(n, 1, 1, 1)
    saturation = _uniform(n, 1 - jitter, 1 + jitter, generator).view(n, 1, 1, 1)
    gray = 0.299 * x[:, :1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:]  # no tensor from the host
    x = gray + (x - gray) * saturation
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = (x - mean) * contrast + mean
    return (x * brightness).clamp_(0, 1)


def keras_augment(x: torch.Tensor, generator: torch.Generator, *, rotate: float = 20.0,
                  shift: float = 0.2, shear: float = 0.2, zoom: float = 0.2) -> torch.Tensor:
    """Paper 001's Keras ImageDataGenerator: rotation ±20°, width/height shift ±20%, shear,
    zoom 0.8-1.2 per axis, horizontal flip, nearest fill, with Keras's semantics (its
    shear_range is an angle in degrees, so 0.2 is a fifth of a degree), as one batched op."""
    n = x.shape[0]
    angle = _uniform(n, -rotate, rotate, generator) * math.pi / 180
    shear_angle = _uniform(n, -shear, shear, generator) * math.pi / 180
    zoom_x, zoom_y = (_uniform(n, 1 - zoom, 1 + zoom, generator) for _ in range(2))
    flip = torch.where(_uniform(n, 0, 1, generator) < 0.5, -1.0, 1.0)
    shift_x, shift_y = (_uniform(n, -shift, shift, generator) * 2 for _ in range(2))
    cos, sin = torch.cos(angle), torch.sin(angle)
    # output → input coordinates: rotation · shear · zoom · flip, then shift (grid units span 2)
    a, b = cos, -sin * torch.cos(shear_angle) - cos * torch.sin(shear_angle)
    c, d = sin, -sin * torch.sin(shear_angle) + cos * torch.cos(shear_angle)
    theta = torch.stack([
        torch.stack([a * zoom_x * flip, b * zoom_y, shift_x], 1),
        torch.stack([c * zoom_x * flip, d * zoom_y, shift_y], 1),
    ], 1).to(x.dtype)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


AUGMENTATIONS = {"dermoscopy": augment, "keras": keras_augment}
