"""Feature-level fusion classifiers: paper 000's ResNet50V2-DeiT and its Table 5 CNN ensembles.

``resnet50v2_deit``: the DeiT-Small (distilled) output tokens are the queries of a
cross-attention whose keys and values are the ResNetV2-50 feature map's positions,
projected to the token width (scaled dot-product attention, several heads); the
attended tokens, added to their queries and layer-normalised, are averaged into
one vector. The CNN ensembles global-pool each backbone and concatenate. Either
way a bottleneck layer and a 7-way head follow.

A single backbone (paper 002's EfficientNet-B4) is the same model with one branch.
Staged training (the paper's) freezes and unfreezes through FreezableClassifier.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from dermflow.models import backbones
from dermflow.models.freezing import FreezableClassifier, stages
from dermflow.models.registry import entry


def is_transformer(name: str) -> bool:
    return name.startswith(("deit", "vit"))


class CrossAttentionFusion(nn.Module):
    """ViT tokens (queries) attend over CNN feature-map positions (keys and values)."""

    def __init__(self, cnn_dim: int, token_dim: int, dim: int, heads: int) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"fusion dim {dim} is not divisible by {heads} heads")
        self.heads = heads
        self.query = nn.Linear(token_dim, dim)
        self.key = nn.Linear(cnn_dim, dim)
        self.value = nn.Linear(cnn_dim, dim)
        self.norm = nn.LayerNorm(dim)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        return x.view(b, n, self.heads, d // self.heads).transpose(1, 2)

    def _qkv(self, tokens: torch.Tensor, fmap: torch.Tensor) -> tuple[torch.Tensor, ...]:
        positions = fmap.flatten(2).transpose(1, 2)  # B x HW x C
        q = self.query(tokens)
        return q, self._split(q), self._split(self.key(positions)), self._split(
            self.value(positions))

    def attention_weights(self, tokens: torch.Tensor, fmap: torch.Tensor) -> torch.Tensor:
        """B x heads x tokens x positions: softmax(QK^T / sqrt(d_k)), each row sums to 1."""
        _, q, k, _ = self._qkv(tokens, fmap)
        return torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1]), dim=-1)

    def forward(self, tokens: torch.Tensor, fmap: torch.Tensor) -> torch.Tensor:
        """B x dim: the attended tokens (plus their queries, normalised), averaged."""
        q_flat, q, k, v = self._qkv(tokens, fmap)
        attended = F.scaled_dot_product_attention(q, k, v)  # fused kernels on CUDA
        attended = attended.transpose(1, 2).reshape(q_flat.shape)
        return self.norm(attended + q_flat).mean(dim=1)


class Renormalize(nn.Module):
    """Re-map input normalised for one backbone to another backbone's mean/std."""

    def __init__(self, source: tuple, target: tuple) -> None:
        super().__init__()
        (m0, s0), (m1, s1) = source, target
        self.register_buffer("scale", (torch.tensor(s0) / torch.tensor(s1)).view(1, 3, 1, 1))
        self.register_buffer("shift", ((torch.tensor(m0) - torch.tensor(m1)) /
                                       torch.tensor(s1)).view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale + self.shift


class FusionClassifier(FreezableClassifier):
    """Several timm backbones fused at feature level, a bottleneck and a 7-way head."""

    def __init__(self, architecture: str, num_classes: int, *, image_size: int,
                 pretrained: bool = False, weights_dir: str | Path | None = None,
                 dim: int = 384, heads: int = 6, bottleneck: int = 256,
                 dropout: float = 0.3) -> None:
        super().__init__()
        self.architecture, self.num_classes = architecture, num_classes
        names = entry(architecture).options["backbones"]
        self.backbones = nn.ModuleList(
            backbones.create(name, num_classes=0, pretrained=pretrained, weights_dir=weights_dir,
                          **({"img_size": image_size} if is_transformer(name) else {}))
            for name in names)
        norms = [backbones.normalization(b) for b in self.backbones]
        self.pretrained_cfg = {"mean": norms[0][0], "std": norms[0][1]}  # the input's
        self.renorm = nn.ModuleList(Renormalize(norms[0], n) for n in norms)
        self.transformer = [is_transformer(n) for n in names]
        if any(self.transformer):
            cnn = self.backbones[self.transformer.index(False)]
            vit = self.backbones[self.transformer.index(True)]
            self.fusion: nn.Module | None = CrossAttentionFusion(cnn.num_features,
                                                                 vit.embed_dim, dim, heads)
            width = dim
        else:
            self.fusion, width = None, sum(b.num_features for b in self.backbones)
        self.bottleneck = nn.Sequential(nn.Linear(width, bottleneck), nn.ReLU(inplace=True),
                                        nn.Dropout(dropout))
        self.head = nn.Linear(bottleneck, num_classes)

    def branch_outputs(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [b.forward_features(r(x)) for b, r in zip(self.backbones, self.renorm,
                                                          strict=True)]

    def features(self, x: torch.Tensor) -> torch.Tensor:
        outputs = self.branch_outputs(x)
        if self.fusion is not None:
            tokens = outputs[self.transformer.index(True)]
            fmap = outputs[self.transformer.index(False)]
            return self.fusion(tokens, fmap)
        return torch.cat([o.mean(dim=(2, 3)) for o in outputs], dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.bottleneck(self.features(x)))

    def saliency_layers(self) -> list[nn.Module]:
        """Grad-CAM's candidate layers, deepest first: the CNN branch's stages (its last
        stage's map feeds the fusion)."""
        return stages(self.backbones[self.transformer.index(False)])[::-1]


def build(architecture: str, *, num_classes: int, image_size: int, settings: dict[str, Any],
          weights_dir: str | Path | None) -> FusionClassifier:
    """A fusion classifier as the ``classifier`` config section describes it."""
    return FusionClassifier(architecture, num_classes, image_size=image_size,
                            pretrained=settings["pretrained"], weights_dir=weights_dir,
                            dim=settings["fusion_dim"], heads=settings["fusion_heads"],
                            bottleneck=settings["bottleneck"], dropout=settings["dropout"])
