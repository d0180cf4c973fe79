"""Running a pipeline stage from a Snakemake script: log file, provenance, clear errors."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dermflow.errors import DermflowError
from dermflow.logs import FORMAT
from dermflow.provenance import write_provenance

if TYPE_CHECKING:
    import torch


@contextmanager
def run_stage(smk: Any) -> Iterator[logging.Logger]:
    """Log to the rule's log file and stderr; on success record provenance beside the outputs.

    Expected failures (bad data, bad config, offline) end the job with status 1 and
    one readable message in the log; anything else is a bug and keeps its traceback.
    """
    log_path = Path(smk.log[0])
    log_path.parent.mkdir(parents=True, exist_ok=True)
    root = logging.getLogger()
    handlers = [logging.FileHandler(log_path, mode="w"), logging.StreamHandler(sys.stderr)]
    for handler in handlers:
        handler.setFormatter(logging.Formatter(FORMAT))
        root.addHandler(handler)
    root.setLevel(logging.INFO)
    logger = logging.getLogger(f"dermflow.{smk.rule}")
    try:
        yield logger
        write_provenance(Path(smk.output[0]).parent, smk.rule, dict(smk.config))
    except DermflowError as err:
        logger.error("%s", err)
        raise SystemExit(1) from None
    finally:
        for handler in handlers:
            root.removeHandler(handler)
            handler.close()


@contextmanager
def gpu_stage(smk: Any) -> Iterator[tuple[logging.Logger, torch.device]]:
    """run_stage plus the GPU claim for the rule's ``gpu`` resource and its CPU threads."""
    import torch  # only GPU stages pay for importing torch

    from dermflow.training.device import claim_gpus

    wildcards = " ".join(f"{k}={v}" for k, v in getattr(smk, "wildcards", {}).items())
    owner = f"rule {smk.rule}" + (f" {wildcards}" if wildcards else "")  # says who holds a GPU
    with run_stage(smk) as logger, claim_gpus(int(smk.resources.get("gpu", 0)),
                                              owner=owner) as claim:
        torch.set_num_threads(max(1, smk.threads))
        yield logger, claim.device
