"""Classifier model files loaded back by name (dermflow.torchfile.save_model writes them).

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

from dermflow.errors import rebuild
from dermflow.models import backbones, factory
from dermflow.torchfile import fill, load_plain, require

# what every model file holds beside its weights (classifiers also hold ``settings``)
REQUIRED = ("state_dict", "architecture", "classes", "image_size", "mean", "std")


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
    require(saved, REQUIRED + (("settings",) if saved.get("kind") == "classifier" else ()),
            path, what="model file", remedy=remedy)
    model = empty_model(saved)
    fill(model, saved.pop("state_dict"), path, remedy=remedy,
         described=f"the {saved['architecture']} network its metadata describes")
    return model.to(device, memory_format=torch.channels_last).eval(), saved
