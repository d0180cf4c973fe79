"""run_stage for the rules that hold a GPU. Apart from dermflow.stage, so that CPU stages
neither import torch nor run (nor rerun for) the GPU claim and determinism code."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch

from dermflow.stage import run_stage
from dermflow.training.determinism import deterministic_errors, set_deterministic
from dermflow.training.device import claim_gpus


@contextmanager
def gpu_stage(smk: Any) -> Iterator[tuple[logging.Logger, torch.device]]:
    """run_stage plus the GPU claim for the rule's ``gpu`` resource, its CPU threads and the
    config's ``deterministic`` kernels (dermflow.training.determinism)."""
    wildcards = " ".join(f"{k}={v}" for k, v in getattr(smk, "wildcards", {}).items())
    owner = f"rule {smk.rule}" + (f" {wildcards}" if wildcards else "")  # says who holds a GPU
    with run_stage(smk) as logger, claim_gpus(int(smk.resources.get("gpu", 0)),
                                              owner=owner) as claim, deterministic_errors():
        set_deterministic(bool(smk.config.get("deterministic", False)))
        torch.set_num_threads(max(1, smk.threads))
        yield logger, claim.device
