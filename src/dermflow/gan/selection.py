"""Paper 002's selection of synthetic images: realistic to the discriminator, and diverse.

Each class is over-generated (``candidates`` per kept image), every candidate is
scored by the trained critic/discriminator (its realism output, and its last
hidden layer as a feature vector), and images are kept greedily: each pick
maximises standardised realism plus ``diversity`` times the standardised cosine
distance to the nearest image already kept (maximal marginal relevance). With
``diversity`` 0 this is the top realism scores; larger values trade realism for
spread, so near-identical candidates are not all kept.
"""

from __future__ import annotations

import math

import numpy as np


def candidate_counts(counts: dict[str, int], candidates: float) -> dict[str, int]:
    """Candidates to generate per class for ``counts`` kept images."""
    return {dx: math.ceil(n * candidates) for dx, n in counts.items()}


def _standardise(x: np.ndarray) -> np.ndarray:
    spread = x.std()
    return (x - x.mean()) / spread if spread > 0 else np.zeros_like(x)


def select_diverse(realism: np.ndarray, features: np.ndarray, k: int,
                   diversity: float) -> np.ndarray:
    """Indices of ``k`` of the candidates, in the order they were picked."""
    n = len(realism)
    if k >= n:
        return np.argsort(-realism, kind="stable")
    unit = features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)
    score = _standardise(realism.astype(np.float64))
    chosen = [int(np.argmax(score))]
    nearest = 1 - unit @ unit[chosen[0]]  # cosine distance to the nearest kept image
    available = np.ones(n, bool)
    available[chosen[0]] = False
    for _ in range(k - 1):
        total = score + diversity * _standardise(nearest)
        total[~available] = -np.inf
        pick = int(np.argmax(total))
        chosen.append(pick)
        available[pick] = False
        nearest = np.minimum(nearest, 1 - unit @ unit[pick])
    return np.asarray(chosen)
