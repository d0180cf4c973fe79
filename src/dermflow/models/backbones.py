"""Building timm networks, with ImageNet weights from the hub or from a local folder.

Offline machines keep weights in a folder (``weights_dir``) as
``<model>.safetensors`` / ``.pth`` / ``.bin``, or in the hub's layout
``<hf_hub_id>/model.safetensors``; when neither hub nor file is reachable, the
error says exactly what to download and where to put it.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import timm
import torch
from timm.models import get_pretrained_cfg

from dermflow.errors import DermflowError

log = logging.getLogger(__name__)

WEIGHT_SUFFIXES = (".safetensors", ".pth", ".bin")


class WeightsError(DermflowError):
    """Pretrained weights were asked for but cannot be had."""


def local_weights(name: str, weights_dir: str | Path | None) -> Path | None:
    """The local weights file for timm model ``name``, if the folder has one."""
    if not weights_dir:
        return None
    folder = Path(weights_dir)
    candidates = [folder / f"{name}{suffix}" for suffix in WEIGHT_SUFFIXES]
    cfg = get_pretrained_cfg(name)
    if cfg is not None and cfg.hf_hub_id:
        hub = folder / cfg.hf_hub_id
        candidates += [hub / "model.safetensors", hub / "pytorch_model.bin"]
    return next((p for p in candidates if p.is_file()), None)


def create(name: str, *, num_classes: int, pretrained: bool = False,
           weights_dir: str | Path | None = None, **kwargs: Any) -> torch.nn.Module:
    """A timm model with a fresh ``num_classes`` head; pretrained from a local file or the hub."""
    if not pretrained:
        return timm.create_model(name, pretrained=False, num_classes=num_classes, **kwargs)
    path = local_weights(name, weights_dir)
    if path is not None:
        log.info("%s: ImageNet weights from %s", name, path)
        return timm.create_model(name, pretrained=True, num_classes=num_classes,
                                 pretrained_cfg_overlay={"file": str(path)}, **kwargs)
    try:
        model = timm.create_model(name, pretrained=True, num_classes=num_classes, **kwargs)
    except Exception as err:  # hub/network failures come in many types (OSError, HTTP, hub)
        cfg = get_pretrained_cfg(name)
        source = (f"https://huggingface.co/{cfg.hf_hub_id}" if cfg and cfg.hf_hub_id
                  else (cfg.url if cfg else "the timm model hub"))
        raise WeightsError(
            f"pretrained weights for {name} are not available offline and could not be "
            f"downloaded ({type(err).__name__}: {err}). Download them from {source} and save "
            f"the file as {Path(weights_dir or 'resources/weights') / (name + '.safetensors')} "
            "(or .pth), or set pretrained: false.") from err
    log.info("%s: ImageNet weights from the hub", name)
    return model


def normalization(model: torch.nn.Module) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The input mean/std the network was (pre)trained with."""
    cfg = getattr(model, "pretrained_cfg", None) or {}
    mean, std = cfg.get("mean", (0.485, 0.456, 0.406)), cfg.get("std", (0.229, 0.224, 0.225))
    return tuple(mean), tuple(std)


def count_parameters(model: torch.nn.Module) -> float:
    """Parameters in millions."""
    return sum(p.numel() for p in model.parameters()) / 1e6
