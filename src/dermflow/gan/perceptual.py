"""LPIPS (AlexNet) that works offline from a local backbone file.

The lpips package ships its linear heads but downloads the AlexNet backbone
through torchvision. Offline machines keep torchvision's ``alexnet().features``
state dict as ``<weights_dir>/alexnet_features_imagenet.pth``; it is loaded into
the layers LPIPS slices (slice1 = layers 0-1, ..., slice5 = 10-11).
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import lpips
import numpy as np
import torch
import torch.nn.functional as F
import torchvision

from dermflow.models.backbones import WeightsError

log = logging.getLogger(__name__)

ALEXNET_FILE = "alexnet_features_imagenet.pth"
MIN_SIDE = 64  # AlexNet's deeper LPIPS layers shrink to nothing on smaller images


def load_lpips(weights_dir: str | Path | None, device: torch.device) -> lpips.LPIPS:
    """LPIPS-alex with its backbone from ``weights_dir`` or, failing that, downloaded."""
    local = Path(weights_dir) / ALEXNET_FILE if weights_dir else None
    if local is not None and local.is_file():
        with warnings.catch_warnings():  # lpips passes torchvision's deprecated `pretrained`
            warnings.simplefilter("ignore", UserWarning)
            metric = lpips.LPIPS(net="alex", pnet_rand=True, verbose=False)
        features = torchvision.models.alexnet().features
        features.load_state_dict(torch.load(local, map_location="cpu", weights_only=True))
        for k in range(1, 6):
            part = getattr(metric.net, f"slice{k}")
            for name in list(part._modules):
                part._modules[name] = features[int(name)]
        log.info("LPIPS-alex backbone from %s", local)
    else:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                metric = lpips.LPIPS(net="alex", verbose=False)
        except Exception as err:  # hub/network failures come in many types
            raise WeightsError(
                f"LPIPS needs AlexNet's ImageNet weights: none in {weights_dir!s} and the "
                f"download failed ({type(err).__name__}: {err}). Save "
                f"torchvision.models.alexnet(weights='IMAGENET1K_V1').features.state_dict() as "
                f"{Path(weights_dir or 'resources/weights') / ALEXNET_FILE}.") from err
    return metric.to(device).eval().requires_grad_(False)


def lpips_input(images: torch.Tensor) -> torch.Tensor:
    """uint8 N x H x W x 3 → float N x 3 x H x W in [-1, 1], at least MIN_SIDE pixels a side."""
    x = images.permute(0, 3, 1, 2).float() / 127.5 - 1
    if min(x.shape[-2:]) < MIN_SIDE:
        x = F.interpolate(x, size=(MIN_SIDE, MIN_SIDE), mode="bilinear", align_corners=False)
    return x


@torch.no_grad()
def lpips_distance(metric: lpips.LPIPS, a: np.ndarray | torch.Tensor, b: np.ndarray | torch.Tensor,
                   batch_size: int = 64, *, rows_a: np.ndarray | None = None,
                   rows_b: np.ndarray | None = None) -> torch.Tensor:
    """LPIPS between paired uint8 NHWC images ``a[rows_a[k]]`` and ``b[rows_b[k]]`` (every row
    when None), one value per pair (on the CPU).

    Pairs are gathered one batch at a time, so a whole synthetic set and its sources are never
    copied at once (at the paper's size that copy alone was 3 GB).
    """
    device = next(metric.parameters()).device
    rows_a = np.arange(len(a)) if rows_a is None else np.asarray(rows_a)
    rows_b = np.arange(len(b)) if rows_b is None else np.asarray(rows_b)
    if len(rows_a) != len(rows_b):
        raise ValueError(f"LPIPS pairs {len(rows_a)} images with {len(rows_b)}")

    def batch(images: np.ndarray | torch.Tensor, rows: np.ndarray) -> torch.Tensor:
        return lpips_input(torch.as_tensor(np.asarray(images[rows])).to(device))

    out = [metric(batch(a, rows_a[i:i + batch_size]),
                  batch(b, rows_b[i:i + batch_size])).flatten().float().cpu()
           for i in range(0, len(rows_a), batch_size)]
    return torch.cat(out) if out else torch.zeros(0)
