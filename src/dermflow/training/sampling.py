"""Which training images an epoch visits: each once in a shuffled order (``uniform``), or
drawn with replacement with class weights 1/f^power (``balanced``).

f is a class's share of the training table, so ``balanced`` composes with the balance
modes: it reweights whatever the table holds, synthetic or augmented images included.
power 0.5 (square-root balancing) draws class c in proportion to sqrt(n_c); power 1
draws every class equally often. An epoch draws as many images as the table has, from
the epoch's generator, so a resumed run draws the same images.
"""

from __future__ import annotations

import numpy as np
import torch

SAMPLINGS = ("uniform", "balanced")


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
                generator: torch.Generator) -> torch.Tensor:
    """Positions of one epoch's images: a permutation of ``train`` without weights, else
    len(train) draws with replacement by ``weights`` (aligned with ``train``)."""
    if weights is None:
        return train[torch.randperm(len(train), generator=generator)]
    return train[torch.multinomial(weights, len(train), replacement=True, generator=generator)]
