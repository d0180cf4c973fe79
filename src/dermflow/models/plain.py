"""One timm network and a linear head: the strong baseline's ``resnetv2_50`` (``resnet18``
 at CPU scale).

The backbone's globally pooled features go straight to a linear layer, as in timm's own
classifier, so the model is the plain network every method must beat when trained with a
modern recipe (the model registry's ``strong_baseline``). It is a FreezableClassifier,
so the staged and partial-freezing schedules work on it too.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from dermflow.models import backbones
from dermflow.models.freezing import FreezableClassifier, stages
from dermflow.models.registry import entry


class PlainClassifier(FreezableClassifier):
    """A timm backbone (global average pooling) and a linear head."""

    def __init__(self, architecture: str, num_classes: int, *, pretrained: bool = False,
                 weights_dir: str | Path | None = None) -> None:
        super().__init__()
        self.architecture, self.num_classes = architecture, num_classes
        backbone = backbones.create(entry(architecture).options["backbone"], num_classes=0,
                                    pretrained=pretrained, weights_dir=weights_dir)
        self.backbones = nn.ModuleList([backbone])
        mean, std = backbones.normalization(backbone)
        self.pretrained_cfg = {"mean": mean, "std": std}
        self.head = nn.Linear(backbone.num_features, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbones[0](x))

    def saliency_layers(self) -> list[nn.Module]:
        """Grad-CAM's candidate layers, deepest first: the backbone's stages."""
        return stages(self.backbones[0])[::-1]


def build(architecture: str, *, num_classes: int, image_size: int, settings: dict[str, Any],
          weights_dir: str | Path | None) -> PlainClassifier:
    """The registered network, pretrained as the ``classifier`` section says."""
    return PlainClassifier(architecture, num_classes, pretrained=settings["pretrained"],
                           weights_dir=weights_dir)
