"""Test-time augmentation: the mean of a model's class probabilities over views of an image.

``flip``: the image and its horizontal mirror. ``dihedral``: the eight symmetries of the
square (four rotations by 90 degrees, each mirrored or not); dermoscopy has no canonical
orientation, so all are label-preserving. The image cache is square, so every view has
the input's shape.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

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


def tta_probs(model: torch.nn.Module, x: torch.Tensor, tta: str) -> torch.Tensor:
    """Softmax probabilities of NCHW ``x``, averaged over the views of ``tta``."""
    views = VIEWS[tta]
    total = torch.softmax(model(views[0](x)).float(), dim=1)
    for view in views[1:]:
        total += torch.softmax(model(view(x).contiguous(memory_format=torch.channels_last))
                               .float(), dim=1)
    return total / len(views)
