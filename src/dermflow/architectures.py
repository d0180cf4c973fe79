"""Building every classifier an experiment can name (dermflow.recipes lists their papers
and training recipes)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from dermflow import fusion
from dermflow.asff import ASFFResNet50
from dermflow.custom_cnn import DermaGanCNN
from dermflow.freezing import FreezableClassifier
from dermflow.hybrids import BACKBONES, HybridClassifier

Builder = Callable[..., FreezableClassifier]


def _fusion(name: str) -> Builder:
    def build(*, num_classes: int, image_size: int, settings: dict[str, Any],
              weights_dir: str | Path | None) -> FreezableClassifier:
        return fusion.create(name, image_size=image_size, settings=settings,
                             weights_dir=weights_dir, num_classes=num_classes)
    return build


def _hybrid(name: str) -> Builder:
    def build(*, num_classes: int, image_size: int, settings: dict[str, Any],
              weights_dir: str | Path | None) -> FreezableClassifier:
        return HybridClassifier(name, num_classes, pretrained=settings["pretrained"],
                                weights_dir=weights_dir)
    return build


def _asff(*, num_classes: int, image_size: int, settings: dict[str, Any],
          weights_dir: str | Path | None) -> FreezableClassifier:
    return ASFFResNet50(num_classes, pretrained=settings["pretrained"], weights_dir=weights_dir,
                        dropout=settings["dropout"])


def _dermagan_cnn(*, num_classes: int, image_size: int, settings: dict[str, Any],
                  weights_dir: str | Path | None) -> FreezableClassifier:
    return DermaGanCNN(num_classes)


BUILDERS: dict[str, Builder] = {
    **{name: _fusion(name) for name in fusion.ARCHITECTURES},
    **{name: _hybrid(name) for name in BACKBONES},
    "asff_resnet50": _asff,
    "dermagan_cnn": _dermagan_cnn,
}


def create(name: str, *, num_classes: int, image_size: int, settings: dict[str, Any],
           weights_dir: str | Path | None) -> FreezableClassifier:
    """An untrained classifier ``name`` as ``settings`` describe it."""
    if name not in BUILDERS:
        raise ValueError(f"unknown model {name!r}; one of {', '.join(BUILDERS)}")
    return BUILDERS[name](num_classes=num_classes, image_size=image_size, settings=settings,
                          weights_dir=weights_dir)
