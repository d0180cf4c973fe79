"""Mixed precision: the one switch every forward pass of a training or inference step reads."""

from __future__ import annotations

import torch


def autocast(device: torch.device, precision: str) -> torch.autocast:
    """bf16 autocast on CUDA when asked for; a no-op context otherwise."""
    enabled = device.type == "cuda" and precision == "bf16"
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=enabled)
