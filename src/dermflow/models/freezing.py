"""Which layers of a classifier learn: the base class every classifier shares.

Pretrained backbones are frozen in two ways the papers use: staged training
(paper 000: all backbones frozen for a warm-up, then their last stages trained)
and partial freezing (paper 001: Keras's "first 100 layers" frozen throughout).
Frozen BatchNorm layers stay in inference mode, as Keras keeps them, so their
running statistics are part of what freezing keeps.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

from torch import nn


def stages(backbone: nn.Module) -> list[nn.Module]:
    """A timm backbone's stages, in order: ResNetV2 ``stages``, ViT/MobileNet/EfficientNet
    ``blocks``, DenseNet ``features``, ResNet ``layer1``-``layer4``."""
    for name in ("stages", "blocks", "features"):
        container = getattr(backbone, name, None)
        if isinstance(container, nn.Sequential | nn.ModuleList):
            return list(container)
    layers = [getattr(backbone, f"layer{i}", None) for i in range(1, 5)]
    if all(isinstance(layer, nn.Module) for layer in layers):
        return layers
    raise ValueError(f"{type(backbone).__name__}: no stages/blocks to unfreeze")


def parameter_layers(module: nn.Module) -> list[nn.Module]:
    """Layers that own parameters (convolutions, norms, linears), in registration order,
    which for timm's CNNs is their forward order."""
    return [m for m in module.modules() if next(m.parameters(recurse=False), None) is not None]


class FreezableClassifier(nn.Module, ABC):
    """A classifier whose pretrained parts are ``backbones``; everything else is its own."""

    backbones: nn.ModuleList
    num_classes: int

    @abstractmethod
    def saliency_layers(self) -> list[nn.Module]:
        """Grad-CAM's candidate layers, deepest first (experiments/saliency picks the deepest
        whose map has spatial extent): a family without them cannot be built, rather than
        failing in predict after training."""

    def freeze_backbones(self) -> None:
        """Warm-up: only the layers after the backbones learn."""
        if not len(self.backbones):
            raise ValueError(f"{type(self).__name__} has no pretrained backbone to freeze; "
                             "use classifier.schedule: single")
        self.backbones.requires_grad_(False)
        self.train(self.training)

    def unfreeze(self, blocks: int) -> None:
        """Fine-tuning: the last ``blocks`` stages of each backbone, and what follows them."""
        for backbone in self.backbones:
            parts = stages(backbone)
            for part in parts[-blocks:]:
                part.requires_grad_(True)
            after = False  # the final norm and anything else after the last stage
            for child in backbone.children():
                if after:
                    child.requires_grad_(True)
                after = after or any(m is parts[-1] for m in child.modules())
        self.train(self.training)

    def freeze_leading(self, layers: int) -> None:
        """Freeze the first ``layers`` parameter-owning layers of every backbone.

        Paper 001 freezes Keras's first 100 layers; Keras also counts parameter-free
        layers (activations, padding, pooling, concatenation), so its 100 are 55
        parameter-owning layers of DenseNet121 and 53 of ResNet50V2 (the model
        registry's defaults).
        """
        for backbone in self.backbones:
            for layer in parameter_layers(backbone)[:layers]:
                layer.requires_grad_(False)
        self.train(self.training)

    def train(self, mode: bool = True) -> FreezableClassifier:
        super().train(mode)
        for module in self.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm) and not any(
                    p.requires_grad for p in module.parameters(recurse=False)):
                module.eval()
        return self
