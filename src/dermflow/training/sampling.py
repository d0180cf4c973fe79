"""Which training images an epoch visits: each once in a shuffled order (``uniform``), or
drawn with replacement with class weights 1/f^power (``balanced``).

f is a class's share of the training table, so ``balanced`` composes with the balance
modes: it reweights whatever the table holds, synthetic or augmented images included.
power 0.5 (square-root balancing) draws class c in proportion to sqrt(n_c); power 1
draws every class equally often. An epoch draws as many images as the table has, or
``size`` (the ``epoch_images`` budget: the same optimizer steps on datasets of any size),
from the epoch's generator, so a resumed run draws the same images.
"""

from __future__ import annotations

import numpy as np
import torch


def class_weights(labels: np.ndarray, power: float) -> np.ndarray:
    """1 / f^power per class present in ``labels`` (0 for absent classes)."""
    counts = np.bincount(labels).astype(np.float64)
    share = counts / max(counts.sum(), 1)
    with np.errstate(divide="ignore"):
        return np.where(counts > 0, share ** -power, 0.0)


def image_weights(labels: np.ndarray, power: float) -> torch.Tensor:
    """Each image's drawing weight: its class's weight."""
    return torch.from_numpy(class_weights(labels, power)[labels])


def epoch_order(train: torch.Tensor, weights: torch.Tensor | None,
                generator: torch.Generator, size: int | None = None) -> torch.Tensor:
    """Positions of one epoch's ``size`` images (None: len(train)). Without weights, shuffled
    passes over ``train`` cut at ``size``, so each image comes up as often as any other, to
    one (one permutation when ``size`` is len(train)); else ``size`` draws with replacement
    by ``weights`` (aligned with ``train``)."""
    size = len(train) if size is None else size
    if weights is None:
        passes = [torch.randperm(len(train), generator=generator)
                  for _ in range(-(-size // max(len(train), 1)))]
        return train[torch.cat(passes)[:size]]
    return train[torch.multinomial(weights, size, replacement=True, generator=generator)]
