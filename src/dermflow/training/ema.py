"""An exponential moving average of a model's weights: the model validated and kept when on.

After each optimizer step, every floating-point parameter and buffer (BatchNorm statistics
included) of the average moves towards the model's: ema = d * ema + (1 - d) * model, with
d = min(decay, (1 + t) / (10 + t)) at update t (TensorFlow's warm-up, so that the first
steps do not tie the average to the initial weights); integer buffers are copied.
"""

from __future__ import annotations

import copy
from typing import Any

import torch


def warm_decay(decay: float, updates: int) -> float:
    """The decay of update ``updates`` (1-based)."""
    return min(decay, (1 + updates) / (10 + updates))


class EMA:
    """A frozen copy of ``model`` that follows its weights."""

    def __init__(self, model: torch.nn.Module, decay: float) -> None:
        self.decay, self.updates = decay, 0
        self.model = copy.deepcopy(model).eval().requires_grad_(False)
        self._bind(model)

    def _bind(self, model: torch.nn.Module) -> None:
        pairs = list(zip(self.model.state_dict().values(), model.state_dict().values(),
                         strict=True))
        floats = [(a, b) for a, b in pairs if a.is_floating_point()]
        self._ema_floats = [a for a, _ in floats]
        self._model_floats = [b for _, b in floats]
        self._others = [(a, b) for a, b in pairs if not a.is_floating_point()]

    @torch.no_grad()
    def update(self) -> None:
        """One step towards the model's current weights."""
        self.updates += 1
        weight = 1 - warm_decay(self.decay, self.updates)
        torch._foreach_lerp_(self._ema_floats, self._model_floats, weight)
        for ema, value in self._others:
            ema.copy_(value)

    def state_dict(self) -> dict[str, Any]:
        return {"model": self.model.state_dict(), "updates": self.updates}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])  # in place: the bound tensors stay valid
        self.updates = state["updates"]
