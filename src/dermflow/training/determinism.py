"""Bitwise-reproducible training on CUDA (the ``deterministic`` config key), and its limits.

Seeding alone (dermflow.training.engine.seed_epoch) makes a CPU run repeat itself: torch's
CPU kernels are deterministic for a given thread count. On CUDA three things still
vary from run to run: cuDNN picks convolution algorithms by timing them (some
accumulate in a different order each time), some backward kernels add with atomics in
whatever order threads finish, and cuBLAS splits reductions over a workspace shared by
streams. ``deterministic: true`` removes all three:
``torch.use_deterministic_algorithms(True)`` (deterministic kernels, or an error naming
an op that has none), ``cudnn.deterministic`` with benchmarking off, and
``CUBLAS_WORKSPACE_CONFIG=:4096:8`` (it must be set before cuBLAS starts: the job sets
it before it touches CUDA). torch.compile's kernels follow the same switch (Inductor
keeps one reduction configuration and falls back to eager for accumulating index_put).
The cost is speed, not accuracy: typically 10-30 % slower steps on convolutional nets
(slower convolution algorithms, serialised backward reductions).
See https://pytorch.org/docs/stable/notes/randomness.html.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from dermflow.errors import DermflowError

CUBLAS_VAR = "CUBLAS_WORKSPACE_CONFIG"
CUBLAS_DETERMINISTIC = (":4096:8", ":16:8")  # the two settings cuBLAS documents; first: ours
NO_DETERMINISTIC_KERNEL = "does not have a deterministic implementation"


class DeterminismError(DermflowError):
    """deterministic: true, but an operation the model needs has no deterministic kernel."""


@dataclass(frozen=True)
class Determinism:
    """A process's switches for reproducible kernels (spawned DDP workers copy them)."""

    algorithms: bool
    cudnn_deterministic: bool
    cudnn_benchmark: bool

    @classmethod
    def current(cls) -> Determinism:
        return cls(torch.are_deterministic_algorithms_enabled(),
                   torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)

    def apply(self) -> None:
        torch.use_deterministic_algorithms(self.algorithms)
        torch.backends.cudnn.deterministic = self.cudnn_deterministic
        torch.backends.cudnn.benchmark = self.cudnn_benchmark


def set_deterministic(enabled: bool) -> Determinism:
    """Switch reproducible kernels on (``deterministic: true``) or leave torch's defaults.

    Call it before anything uses CUDA: cuBLAS reads CUBLAS_WORKSPACE_CONFIG when it
    starts. A value the user set is kept when it is one of cuBLAS's deterministic ones.
    """
    if not enabled:
        return Determinism.current()
    if os.environ.get(CUBLAS_VAR) not in CUBLAS_DETERMINISTIC:
        os.environ[CUBLAS_VAR] = CUBLAS_DETERMINISTIC[0]
    state = Determinism(algorithms=True, cudnn_deterministic=True, cudnn_benchmark=False)
    state.apply()
    return state


@contextmanager
def deterministic_errors() -> Iterator[None]:
    """Report an op without a deterministic kernel as the config's problem, in one line."""
    try:
        yield
    except RuntimeError as err:
        if NO_DETERMINISTIC_KERNEL not in str(err):
            raise
        op = str(err).split(NO_DETERMINISTIC_KERNEL)[0].strip()
        raise DeterminismError(
            f"deterministic: true, but {op} has no deterministic kernel in torch "
            f"{torch.__version__}: set deterministic: false in config.yaml (runs then repeat "
            "only up to floating-point reduction order), or use a model without it") from None
