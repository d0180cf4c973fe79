"""Model files on disk: weights saved with what rebuilds the network, loaded back by name.

A file holds the state dict and its metadata: ``architecture`` (a registered classifier
when ``kind`` is ``classifier``, else a timm model name: the baseline), ``classes``,
``image_size``, ``mean``/``std`` and the settings it was trained with, all tensors and
plain values, so it loads with ``weights_only=True`` (dermflow.torchfile) and a shared file
cannot run code. Loading rebuilds the empty network through the registry
(dermflow.models.factory) or timm, then fills it.
"""

from __future__ import annotations

import os
from typing import Any

import torch

from dermflow.atomic import atomic_path
from dermflow.errors import DamagedFileError, rebuild
from dermflow.models import backbones, factory
from dermflow.torchfile import load_plain

# what every model file holds beside its weights (classifiers also hold ``settings``)
REQUIRED = ("state_dict", "architecture", "classes", "image_size", "mean", "std")


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


def load_model(path: str | os.PathLike[str], device: torch.device, *,
               rule: str = "train_classifier") -> tuple[torch.nn.Module, dict[str, Any]]:
    """A model written by save_model, on ``device``, in eval mode, and its metadata.

    ``rule`` is the rule that writes the file, named in the remedy when it is damaged
    or is not a dermflow model file.
    """
    remedy = f"{rebuild(rule)}, or copy it again if it came from elsewhere"
    saved = load_plain(path, remedy=remedy)
    required = REQUIRED + (("settings",) if saved.get("kind") == "classifier" else ())
    missing = [key for key in required if key not in saved]
    if missing:
        raise DamagedFileError(path, f"not a dermflow model file (it lacks {', '.join(missing)})",
                               remedy)
    model = empty_model(saved)
    try:
        model.load_state_dict(saved.pop("state_dict"))
    except RuntimeError as err:  # missing, unexpected or misshapen weights
        raise DamagedFileError(path, f"its weights do not fit the {saved['architecture']} "
                               "network its metadata describes", remedy) from err
    return model.to(device, memory_format=torch.channels_last).eval(), saved
