"""Paper 004's ASFF-ResNet50: adaptive fusion of conv4 and conv5 features.

ResNet-50's conv4 output (conv4_block6_out, 1024 channels, 1/16 resolution) holds
detail, its conv5 output (conv5_block3_out, 2048 channels, 1/32) semantics. conv5
is upsampled to conv4's grid and a 1x1 convolution brings it to 1024 channels;
the two maps, concatenated and global-average-pooled, go through two dense layers
(ReLU, then softmax) that give each image two weights summing to 1, and the fused
map is w·conv4 + (1 - w)·conv5 (the paper's Eq. 7). Pooling and a dense head follow.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from dermflow.models import backbones
from dermflow.models.freezing import FreezableClassifier


class AdaptiveFusion(nn.Module):
    """Softmax-weighted sum of two same-shaped feature maps, weights from their pooled concat."""

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        self.weigh = nn.Sequential(nn.Linear(2 * channels, channels // reduction),
                                   nn.ReLU(inplace=True), nn.Linear(channels // reduction, 2))

    def weights(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """N x 2 fusion weights, each row on the simplex."""
        return torch.softmax(self.weigh(torch.cat([a, b], 1).mean(dim=(2, 3))).float(), dim=1)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        w = self.weights(a, b).to(a.dtype)
        return a * w[:, :1, None, None] + b * w[:, 1:, None, None]


class ASFFResNet50(FreezableClassifier):
    """ResNet-50 whose conv4 and conv5 maps are fused adaptively before the head."""

    def __init__(self, num_classes: int, *, pretrained: bool = False,
                 weights_dir: str | Path | None = None, dropout: float = 0.3) -> None:
        super().__init__()
        self.architecture, self.num_classes = "asff_resnet50", num_classes
        backbone = backbones.create("resnet50", num_classes=0, pretrained=pretrained,
                                 weights_dir=weights_dir)
        self.backbones = nn.ModuleList([backbone])
        self.pretrained_cfg = dict(zip(("mean", "std"), backbones.normalization(backbone),
                                       strict=True))
        c4, c5 = backbone.layer3[-1].conv3.out_channels, backbone.num_features
        self.align = nn.Conv2d(c5, c4, 1)
        self.fusion = AdaptiveFusion(c4)
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(c4, num_classes))

    def levels(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """conv4's map and conv5's, upsampled and projected onto conv4's grid and width."""
        r = self.backbones[0]
        x = r.layer2(r.layer1(r.maxpool(r.act1(r.bn1(r.conv1(x))))))
        c4 = r.layer3(x)
        c5 = F.interpolate(r.layer4(c4), size=c4.shape[-2:], mode="bilinear",
                           align_corners=False)
        return c4, self.align(c5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.fusion(*self.levels(x)).mean(dim=(2, 3)))

    def fusion_weights(self, x: torch.Tensor) -> torch.Tensor:
        """N x 2: each image's weights of conv4 and conv5."""
        return self.fusion.weights(*self.levels(x))

    def saliency_layers(self) -> list[nn.Module]:
        """Grad-CAM's candidate layers, deepest first: the fused map (on conv4's grid), then
        conv3 and conv2."""
        r = self.backbones[0]
        return [self.fusion, r.layer2, r.layer1]


def build(architecture: str, *, num_classes: int, image_size: int, settings: dict[str, Any],
          weights_dir: str | Path | None) -> ASFFResNet50:
    """ASFF-ResNet50 (the registry's builder signature)."""
    return ASFFResNet50(num_classes, pretrained=settings["pretrained"], weights_dir=weights_dir,
                        dropout=settings["dropout"])
