"""Paper 003's small custom CNN (DermaGAN's classifier), as the paper lists it.

64x64 input (larger images are resized, as the paper's were); Conv 60 1x1 + ReLU,
MaxPool 2x2 stride 1, Conv 50 3x3 + ReLU, MaxPool 5x5 stride 1, flatten, Dense 256
+ Dropout 0.2, Dense 128 + Dropout 0.2, softmax head. No pretrained part.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from dermflow.models.freezing import FreezableClassifier

INPUT_SIZE = 64


class DermaGanCNN(FreezableClassifier):
    """The custom CNN; its flattened map is 50 x 57 x 57 at the paper's 64 px."""

    def __init__(self, num_classes: int, *, input_size: int = INPUT_SIZE,
                 dropout: float = 0.2) -> None:
        super().__init__()
        self.architecture, self.num_classes, self.input_size = "dermagan_cnn", num_classes, \
            input_size
        self.backbones = nn.ModuleList()
        self.pretrained_cfg = {"mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5)}
        self.features = nn.Sequential(
            nn.Conv2d(3, 60, 1), nn.ReLU(inplace=True), nn.MaxPool2d(2, stride=1),
            nn.Conv2d(60, 50, 3), nn.ReLU(inplace=True), nn.MaxPool2d(5, stride=1))
        side = input_size - 1 - 2 - 4
        self.head = nn.Sequential(
            nn.Flatten(), nn.Linear(50 * side * side, 256), nn.ReLU(inplace=True),
            nn.Dropout(dropout), nn.Linear(256, 128), nn.ReLU(inplace=True), nn.Dropout(dropout),
            nn.Linear(128, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.input_size or x.shape[-2] != self.input_size:
            x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear",
                              antialias=True, align_corners=False)
        return self.head(self.features(x))

    def saliency_layers(self) -> list[nn.Module]:
        """Grad-CAM's layer: the second convolution's block (57 x 57 at any input size)."""
        return [self.features]


def build(architecture: str, *, num_classes: int, image_size: int, settings: dict[str, Any],
          weights_dir: str | Path | None) -> DermaGanCNN:
    """DermaGAN's CNN (the registry's builder signature; nothing pretrained)."""
    return DermaGanCNN(num_classes)
