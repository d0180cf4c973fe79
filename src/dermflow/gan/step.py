"""What every generator kind shares: the run's settings and the shape of a training step.

A kind (dermflow.gan.registry) brings its networks, a step class (one critic or
discriminator update and one generator update) and its loss panels; the loop in
dermflow.gan.training drives any of them the same way.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

TO_UNIT = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))  # ImageTensor mean/std that map [0, 1] to [-1, 1]


@dataclass(frozen=True)
class GanConfig:
    """What defines a GAN run (its hash names the checkpoint it may resume). No defaults: a
    kind's ``train_config`` builds it from the validated ``gan`` section."""

    epochs: int
    batch_size: int
    lr_g: float
    lr_d: float
    betas: tuple[float, float]
    gp_weight: float
    identity_weight: float
    diversity_weight: float
    oversample: bool
    precision: str
    seed: int
    extra: dict[str, Any] = field(default_factory=dict)  # networks and data, for the hash


class AdversarialStep:
    """One critic and one generator update; returns the losses as device tensors (no sync)."""

    losses: tuple[str, ...] = ()

    def __init__(self, generator: torch.nn.Module, critic: torch.nn.Module,
                 cfg: GanConfig) -> None:
        self.g, self.d, self.cfg = generator, critic, cfg
        self.opt_g = torch.optim.Adam(generator.parameters(), lr=cfg.lr_g, betas=cfg.betas)
        self.opt_d = torch.optim.Adam(critic.parameters(), lr=cfg.lr_d, betas=cfg.betas)

    def __call__(self, x: torch.Tensor, attention: torch.Tensor | None, label: torch.Tensor,
                 generator: torch.Generator) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def state(self) -> dict[str, Any]:
        return {"generator": self.g.state_dict(), "critic": self.d.state_dict(),
                "opt_g": self.opt_g.state_dict(), "opt_d": self.opt_d.state_dict()}

    def load(self, state: dict[str, Any]) -> None:
        self.g.load_state_dict(state["generator"])
        self.d.load_state_dict(state["critic"])
        self.opt_g.load_state_dict(state["opt_g"])
        self.opt_d.load_state_dict(state["opt_d"])


def resize(x: torch.Tensor, size: int) -> torch.Tensor:
    """Square images to ``size`` (antialiased when shrinking); unchanged when already there."""
    if x.shape[-1] == size and x.shape[-2] == size:
        return x
    return F.interpolate(x, size=(size, size), mode="bilinear", antialias=True,
                         align_corners=False)
