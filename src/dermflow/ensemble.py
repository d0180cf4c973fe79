"""The fold ensemble, in its own module: cross_predict evaluates it and ``dermflow predict``
deploys it, so both run this one definition and neither pulls in the other's code."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def ensemble_mean(probabilities: Sequence[np.ndarray]) -> np.ndarray:
    """The fold ensemble's probabilities (images x classes): the unweighted mean of its
    models' (rows aligned), each of the K x S runs counting once."""
    return np.stack(probabilities).mean(axis=0)
