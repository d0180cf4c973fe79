"""Learning-rate schedules: the factor each training step multiplies the base learning rate by.

``constant`` keeps it; ``plateau`` multiplies it by ``plateau_factor`` after
``plateau_patience`` epochs without gain in ``monitor`` (torch's ReduceLROnPlateau, stepped
per epoch by the loop). ``cosine`` and ``onecycle`` are curves over the run's optimizer
steps, set before every step:

- ``cosine``: a linear warm-up over ``lr_warmup_epochs`` (step k of W at (k + 1) / (W + 1)
  of the peak), then half a cosine from the peak to 0 at the end of the run;
- ``onecycle`` (Smith's one-cycle, as torch's OneCycleLR with its defaults): from peak/25
  up to the peak over the warm-up, then down to peak/25/1e4 at the last step, both legs
  cosine-shaped.

A curve is a function of the step alone, so a resumed run sets exactly the learning rates
an uninterrupted one would. No torch here: config validation reads ``resolve`` while the
workflow plans.
"""

from __future__ import annotations

import math

SCHEDULES = ("constant", "plateau", "cosine", "onecycle")
CURVES = ("cosine", "onecycle")  # stepped per batch
ONECYCLE_DIV = 25.0  # start = peak / ONECYCLE_DIV
ONECYCLE_FINAL_DIV = 1e4  # end = start / ONECYCLE_FINAL_DIV


def resolve(schedule: str, plateau_patience: int) -> str:
    """The schedule a run follows: ``constant`` with ``plateau_patience`` > 0 is ``plateau``
    (configs written before ``lr_schedule`` existed turned LR-on-plateau on that way)."""
    return "plateau" if schedule == "constant" and plateau_patience > 0 else schedule


def _cos(start: float, end: float, pct: float) -> float:
    """Cosine-shaped move from ``start`` (pct 0) to ``end`` (pct 1)."""
    return end + (start - end) / 2 * (1 + math.cos(math.pi * pct))


def lr_factor(schedule: str, step: int, total: int, warmup: int) -> float:
    """The factor of the base learning rate at optimizer step ``step`` (0-based) of ``total``,
    with ``warmup`` warm-up steps (curves only; ``constant``/``plateau`` give 1)."""
    if schedule not in CURVES:
        return 1.0
    warmup = min(max(warmup, 0), total - 1)
    if schedule == "cosine":
        if step < warmup:
            return (step + 1) / (warmup + 1)
        return _cos(1.0, 0.0, (step - warmup) / max(total - warmup, 1))
    start = 1 / ONECYCLE_DIV
    if step <= warmup and warmup > 0:
        return _cos(start, 1.0, step / warmup)
    return _cos(1.0, start / ONECYCLE_FINAL_DIV, (step - warmup) / max(total - 1 - warmup, 1))
