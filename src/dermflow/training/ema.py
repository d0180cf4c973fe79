"""An exponential moving average of a model's weights: the model validated and kept when on.

After each optimizer step, every floating-point parameter and buffer of the average
moves towards the model's: ema = d * ema + (1 - d) * model, with
d = min(decay, (1 + t) / (10 + t)) at update t; integer buffers are copied. The decay
warms up (TensorFlow's ExponentialMovingAverage ``num_updates``; timm's ModelEmaV3
``use_warmup`` is the same idea with d = 1 - (1 + t)^-power), so on a short run the
average is of the last few steps, not of the initial weights: 0.18 at update 1, 0.7 at
update 20, 0.9 at 80, 0.999 only after 8990.

Averaged weights have no BatchNorm statistics of their own: the averaged running
statistics are those of other weights, and lag them further when the weights move fast
(a short run, a high learning rate), enough to put a model trained from scratch at
chance. So before each validation the average's statistics are recomputed from training
batches (``recompute_norms``): PreciseBN (Wu & Johnson, "Rethinking 'Batch' in
BatchNorm", 2021), as SWA's torch.optim.swa_utils.update_bn does for averaged weights.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import Any

import torch
from torch.nn.modules.batchnorm import _BatchNorm

# Images the statistics are recomputed from: Wu & Johnson find some 10^3-10^4 enough, and
# a cap keeps the pass a fraction of an epoch on a large training table.
NORM_IMAGES = 4096


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

    @torch.no_grad()
    def recompute_norms(self, model: torch.nn.Module, inputs: Iterable[torch.Tensor]) -> None:
        """The average's BatchNorm statistics recomputed for its own weights: the mean over
        the batches of ``inputs`` (momentum None), of the layers whose statistics training
        moves (in training mode in ``model``, the one trained); frozen ones keep theirs."""
        moving = {name for name, module in model.named_modules()
                  if isinstance(module, _BatchNorm) and module.training}
        norms = [module for name, module in self.model.named_modules() if name in moving]
        if not norms:
            return
        momenta = [module.momentum for module in norms]
        for module in norms:
            module.reset_running_stats()
            module.momentum = None
            module.train()
        for x in inputs:
            self.model(x)
        for module, momentum in zip(norms, momenta, strict=True):
            module.momentum = momentum
        self.model.eval()

    def state_dict(self) -> dict[str, Any]:
        return {"model": self.model.state_dict(), "updates": self.updates}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])  # in place: the bound tensors stay valid
        self.updates = state["updates"]
