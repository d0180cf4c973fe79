"""Model files on disk: weights saved with what rebuilds the network, loaded back by name.

A file holds the state dict and its metadata: ``architecture`` (a registered classifier
when ``kind`` is ``classifier``, else a timm model name: the baseline), ``classes``,
``image_size``, ``mean``/``std`` and the settings it was trained with. Loading rebuilds
the empty network through the registry (dermflow.models.factory) or timm, then fills it.
"""

from __future__ import annotations

import os
from typing import Any

import torch

from dermflow.atomic import atomic_path
from dermflow.models import backbones, factory


def save_model(model: torch.nn.Module, path: str | os.PathLike[str], **meta: Any) -> None:
    """Weights together with the config they were trained with."""
    with atomic_path(path) as tmp:
        torch.save({"state_dict": model.state_dict(), **meta}, tmp)


def empty_model(saved: dict[str, Any]) -> torch.nn.Module:
    """The untrained network a saved file's metadata describes (no pretrained download)."""
    if saved.get("kind") == "classifier":
        return factory.create(saved["architecture"], image_size=saved["image_size"],
                              settings={**saved["settings"], "pretrained": False},
                              weights_dir=None, num_classes=len(saved["classes"]))
    return backbones.create(saved["architecture"], num_classes=len(saved["classes"]))


def load_model(path: str | os.PathLike[str], device: torch.device,
               ) -> tuple[torch.nn.Module, dict[str, Any]]:
    """A model written by save_model, on ``device``, in eval mode, and its metadata."""
    saved = torch.load(path, map_location="cpu", weights_only=False)
    model = empty_model(saved)
    model.load_state_dict(saved.pop("state_dict"))
    return model.to(device, memory_format=torch.channels_last).eval(), saved
