"""TrainConfig and GanConfig as the stages build them from the schema's defaults, changed
where a test says: the dataclasses have no defaults of their own, so a test states only what
it varies."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from dermflow.config import schema_defaults
from dermflow.gan.step import GanConfig
from dermflow.gan.training import gan_config as build_gan_config
from dermflow.training.baseline import train_config as build_train_config
from dermflow.training.loop import TrainConfig

DEFAULTS = schema_defaults()


def train_config(**changes: Any) -> TrainConfig:
    """The baseline's run (its section's defaults on the plain loop, compile off, seed 0)."""
    cfg = build_train_config(DEFAULTS["baseline"], compile_=False,
                             precision=DEFAULTS["precision"], seed=0, extra={})
    return replace(cfg, **changes)


def gan_config(**changes: Any) -> GanConfig:
    """The C'GAN's run (the ``gan`` section's defaults, seed 0)."""
    cfg = build_gan_config(DEFAULTS["gan"], precision=DEFAULTS["precision"], seed=0, extra={})
    return replace(cfg, **changes)
