"""Building a registered classifier (dermflow.models.registry) by name: the builder's module
is imported only here, when a job builds the model."""

from __future__ import annotations

from importlib import import_module
from pathlib import Path
from typing import Any

from dermflow.models.freezing import FreezableClassifier
from dermflow.models.registry import entry


def create(name: str, *, num_classes: int, image_size: int, settings: dict[str, Any],
           weights_dir: str | Path | None) -> FreezableClassifier:
    """An untrained classifier ``name`` as ``settings`` describe it."""
    module, function = entry(name).builder.split(":")
    build = getattr(import_module(module), function)
    return build(name, num_classes=num_classes, image_size=image_size, settings=settings,
                 weights_dir=weights_dir)
