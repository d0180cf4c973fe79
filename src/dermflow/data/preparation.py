"""How an image becomes a network's input, as a record a model file carries.

The pipeline prepares every image the same way: hair removal (``hair_removal``, when
enabled) at the image's own resolution, then the cache's square resize to
``image_size``. A classifier saves this recipe with its weights, so ``dermflow
predict`` prepares new images exactly as the model's training images were, whatever
config is at hand; a config that disagrees with the model is refused, naming the keys.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from dermflow.data.cache import resize_square
from dermflow.data.hair import HairParams, hair_params, remove_hair
from dermflow.data.images import read_rgb

HAIR_KEYS = ("enabled", "kernel_size", "kernel_shape", "threshold", "inpaint_method",
             "inpaint_radius")


def recipe(config: dict[str, Any]) -> dict[str, Any]:
    """The preparation a (validated) config gives: hair removal and the cache's size."""
    return {"hair_removal": {k: config["hair_removal"][k] for k in HAIR_KEYS},
            "image_size": int(config["image_size"])}


def differences(saved: dict[str, Any], wanted: dict[str, Any]) -> list[str]:
    """Dotted keys on which two recipes disagree, with both values."""
    found = []
    if saved["image_size"] != wanted["image_size"]:
        found.append(f"image_size (model {saved['image_size']}, config {wanted['image_size']})")
    for key in HAIR_KEYS:
        a, b = saved["hair_removal"][key], wanted["hair_removal"][key]
        if a != b:
            found.append(f"hair_removal.{key} (model {a!r}, config {b!r})")
    return found


def prepare(path: str, prepared_as: dict[str, Any]) -> np.ndarray:
    """One image file as the recipe prepares it: size x size x 3 uint8."""
    image = read_rgb(str(path))
    hair = prepared_as["hair_removal"]
    if hair["enabled"]:
        params: HairParams = hair_params(hair)
        image = remove_hair(image, params)[0]
    return resize_square(image, prepared_as["image_size"])
