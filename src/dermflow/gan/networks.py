"""The generator file's networks and the attention maps that condition them: what training
and synthesis share, apart from the training loop, so an edit to the loop (dermflow.gan.
training, dermflow.training.engine) does not rerun synthesis (dermflow.codehash)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from dermflow.errors import rebuild
from dermflow.gan.registry import family
from dermflow.torchfile import fill, load_plain, require
from dermflow.training.batches import to_device

GENERATOR_KEYS = ("state_dict", "critic", "settings", "image_size")  # what load_networks reads


def build_networks(settings: dict[str, Any], image_size: int,
                   ) -> tuple[torch.nn.Module, torch.nn.Module]:
    """Generator and critic (discriminator) of ``gan.kind`` as the ``gan`` section describes."""
    return family(settings["kind"]).networks(settings, image_size)


def attention_tensor(maps: np.ndarray, device: torch.device, resident: bool) -> torch.Tensor:
    """The float16 attention maps, on the device when the images are."""
    tensor = torch.from_numpy(np.array(maps, dtype=np.float16))
    return tensor.to(device) if resident and device.type == "cuda" else tensor


def gather_attention(maps: torch.Tensor | None, rows: torch.Tensor, device: torch.device,
                     ) -> torch.Tensor | None:
    """N x 1 x S x S float attention for cache rows (None for generators without it)."""
    if maps is None:
        return None
    return to_device(maps[to_device(rows, maps.device)], device).float().unsqueeze(1)


def load_networks(path: str | Path, device: torch.device,
                  ) -> tuple[torch.nn.Module, torch.nn.Module, dict[str, Any]]:
    """The generator and critic written by train_gan, on ``device``, in eval mode
    (tensors and plain data only: no code in the file runs)."""
    remedy = rebuild("train_gan")
    saved = load_plain(path, remedy=remedy)
    require(saved, GENERATOR_KEYS, path, what="generator file", remedy=remedy)
    generator, critic = build_networks(saved["settings"], saved["image_size"])
    described = f"the {saved['settings']['kind']} networks its settings describe"
    fill(generator, saved.pop("state_dict"), path, described=described, remedy=remedy)
    fill(critic, saved.pop("critic"), path, described=described, remedy=remedy)
    return generator.to(device).eval(), critic.to(device).eval(), saved
