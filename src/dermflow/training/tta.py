"""Test-time augmentation: the mean of a model's class probabilities over views of an image.

``flip``: the image and its horizontal mirror. ``dihedral``: the eight symmetries of the
square (four rotations by 90 degrees, each mirrored or not); dermoscopy has no canonical
orientation, so all are label-preserving. The image cache is square, so every view has
the input's shape.

Probabilities come from float32 logits: under bf16 autocast the model's output layer
would round its logits to bf16 (8 significant bits: a logit gap of 10 is off by up to
0.03, the probability by about 3 %, and nearby scores tie, which AUC and calibration
feel), so that one layer is computed again in float32 from its input (``fp32_logits``):
a timm network's classifier, a Linear or the 1x1 Conv2d of its convolutional heads (the
baseline's ``resnetv2_50``), or a dermflow classifier's last Linear.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

View = Callable[[torch.Tensor], torch.Tensor]


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


def _mirror(x: torch.Tensor) -> torch.Tensor:
    return x.flip(-1)


def _rotation(k: int, mirror: bool) -> View:
    def view(x: torch.Tensor) -> torch.Tensor:
        return torch.rot90(x.flip(-1) if mirror else x, k, dims=(-2, -1))
    return view


VIEWS: dict[str, tuple[View, ...]] = {
    "none": (_identity,),
    "flip": (_identity, _mirror),
    "dihedral": tuple(_rotation(k, m) for m in (False, True) for k in range(4)),
}


def _computes_logits(layer: Any) -> bool:
    """A Linear, or a 1x1 Conv2d (timm's convolutional heads, e.g. resnetv2's ``head.fc``)."""
    return isinstance(layer, nn.Linear) or (isinstance(layer, nn.Conv2d)
                                            and layer.kernel_size == (1, 1))


def output_layer(model: nn.Module) -> nn.Linear | nn.Conv2d | None:
    """The layer that computes the logits: a timm network's classifier (``get_classifier``),
    else the last Linear a dermflow classifier (its ``head``) registers."""
    classifier = getattr(model, "get_classifier", None)
    layer = classifier() if callable(classifier) else None
    if _computes_logits(layer):
        return layer
    return next((m for m in reversed(list(model.modules())) if isinstance(m, nn.Linear)), None)


def _in_float32(module: nn.Module, inputs: tuple[Any, ...], output: torch.Tensor,
                ) -> torch.Tensor:
    with torch.autocast(output.device.type, enabled=False):
        return module.forward(inputs[0].float())  # forward, not the module: no hook again


@contextmanager
def fp32_logits(model: nn.Module) -> Iterator[None]:
    """While inside, the model's output layer computes float32 logits, autocast or not."""
    layer = output_layer(model)
    if layer is None:
        yield
        return
    handle = layer.register_forward_hook(_in_float32)
    try:
        yield
    finally:
        handle.remove()


def tta_probs(model: torch.nn.Module, x: torch.Tensor, tta: str) -> torch.Tensor:
    """Softmax probabilities of NCHW ``x`` from float32 logits, averaged over the views of
    ``tta``."""
    views = VIEWS[tta]
    with fp32_logits(model):
        total = torch.softmax(model(views[0](x)).float(), dim=1)
        for view in views[1:]:
            total += torch.softmax(model(view(x).contiguous(memory_format=torch.channels_last))
                                   .float(), dim=1)
    return total / len(views)
