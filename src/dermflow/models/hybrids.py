"""Paper 001's hybrids: a custom CNN path beside a pretrained backbone, concatenated.

``cnn_densenet121``: three Conv3x3-ReLU-BatchNorm-MaxPool blocks (64, 128, 256
filters) beside DenseNet121. ``cnn_resnet50v2_attention``: the same CNN path beside
ResNet50V2 whose final feature map is re-weighted by a spatial attention map (a
1x1 convolution with a sigmoid: one weight in [0, 1] per position), the map the
paper overlays as its heatmaps. Both: global average pooling, concatenation, then
Dense 512 / Dropout 0.5 / Dense 256 / Dropout 0.3 / softmax head.

One departure: the paper flattens the CNN path's output. At 224 px that is a
28x28x256 map, whose 200,704 features would give the first dense layer ~100M
weights, against the paper's own count of 12.5M trainable parameters; it is
global-average-pooled here, as the backbone path is.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from dermflow.models import backbones
from dermflow.models.freezing import FreezableClassifier, stages
from dermflow.models.registry import entry


def conv_path(widths: tuple[int, ...] = (64, 128, 256)) -> nn.Sequential:
    """The custom CNN path: Conv3x3 → ReLU → BatchNorm → MaxPool 2x2 per block, pooled."""
    layers: list[nn.Module] = []
    width = 3
    for out in widths:
        layers += [nn.Conv2d(width, out, 3, padding=1), nn.ReLU(inplace=True),
                   nn.BatchNorm2d(out), nn.MaxPool2d(2)]
        width = out
    return nn.Sequential(*layers)


class SpatialAttention(nn.Module):
    """A 1x1 convolution and a sigmoid: one weight per feature-map position."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, 1, 1)

    def weights(self, fmap: torch.Tensor) -> torch.Tensor:
        """N x 1 x h x w attention weights in [0, 1]."""
        return torch.sigmoid(self.conv(fmap))

    def forward(self, fmap: torch.Tensor) -> torch.Tensor:
        return fmap * self.weights(fmap)


class HybridClassifier(FreezableClassifier):
    """Custom CNN path + pretrained backbone (optionally with spatial attention) + dense head."""

    def __init__(self, architecture: str, num_classes: int, *, pretrained: bool = False,
                 weights_dir: str | Path | None = None, widths: tuple[int, ...] = (64, 128, 256),
                 hidden: tuple[int, int] = (512, 256), dropouts: tuple[float, float] = (0.5, 0.3),
                 ) -> None:
        super().__init__()
        options = entry(architecture).options
        name, attention = options["backbone"], options["attention"]
        self.architecture, self.num_classes = architecture, num_classes
        backbone = backbones.create(name, num_classes=0, pretrained=pretrained,
                                 weights_dir=weights_dir)
        self.backbones = nn.ModuleList([backbone])
        self.pretrained_cfg = dict(zip(("mean", "std"), backbones.normalization(backbone),
                                       strict=True))
        self.cnn = conv_path(widths)
        self.attention = SpatialAttention(backbone.num_features) if attention else None
        self.head = nn.Sequential(
            nn.Linear(widths[-1] + backbone.num_features, hidden[0]), nn.ReLU(inplace=True),
            nn.Dropout(dropouts[0]), nn.Linear(hidden[0], hidden[1]), nn.ReLU(inplace=True),
            nn.Dropout(dropouts[1]), nn.Linear(hidden[1], num_classes))

    def backbone_map(self, x: torch.Tensor) -> torch.Tensor:
        """The backbone's final feature map, re-weighted by the attention when there is one."""
        fmap = self.backbones[0].forward_features(x)
        return self.attention(fmap) if self.attention is not None else fmap

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = torch.cat([self.cnn(x).mean(dim=(2, 3)),
                              self.backbone_map(x).mean(dim=(2, 3))], dim=1)
        return self.head(features)

    def saliency_layers(self) -> list[nn.Module]:
        """Grad-CAM's candidate layers, deepest first: the attention (its output is the
        attended map) where there is one, then the backbone's stages."""
        attention = [self.attention] if self.attention is not None else []
        return attention + stages(self.backbones[0])[::-1]

    def attention_map(self, x: torch.Tensor) -> torch.Tensor | None:
        """N x h x w attention weights on the backbone's final grid (the paper's heatmaps,
        once upsampled to the image)."""
        if self.attention is None:
            return None
        return self.attention.weights(self.backbones[0].forward_features(x))[:, 0]


def build(architecture: str, *, num_classes: int, image_size: int, settings: dict[str, Any],
          weights_dir: str | Path | None) -> HybridClassifier:
    """A paper 001 hybrid (the registry's builder signature; image_size is not needed)."""
    return HybridClassifier(architecture, num_classes, pretrained=settings["pretrained"],
                            weights_dir=weights_dir)
