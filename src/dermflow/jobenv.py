"""The environment of a workflow run: what every job inherits, and how many GPU jobs run at once.

Imported by the Snakefile at every Snakemake start, so nothing here imports torch
or touches CUDA.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

GPU_COUNT_VAR = "DERMFLOW_GPU_COUNT"  # overrides GPU detection (and fakes GPUs in tests)
NVIDIA_PROC = Path("/proc/driver/nvidia/gpus")


def export_src(src: str) -> None:
    """Put the workflow's own library first on PYTHONPATH, for this process's jobs.

    Jobs (local, conda or cluster) then run the dermflow that sits beside the
    Snakefile, whatever else is installed: workflow and library stay in step.
    """
    current = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (src, current) if p)


def _nvidia_gpus() -> tuple[int | None, str]:
    """The machine's NVIDIA GPUs, all of them (None: cannot tell), and how they were counted."""
    try:
        listing = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True,
                                 timeout=60, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        pass
    else:  # one "GPU i: name (UUID: ...)" line per GPU; MIG slices are indented below theirs
        return sum(line.startswith("GPU ") for line in listing.splitlines()), "nvidia-smi -L"
    try:
        return len(list(NVIDIA_PROC.iterdir())), str(NVIDIA_PROC)
    except OSError:
        return None, "no nvidia-smi and no NVIDIA driver"


def local_gpu_count() -> tuple[int | None, str]:
    """How many GPUs this machine's dermflow jobs can claim (None: unknown), and why.

    Counted without CUDA: DERMFLOW_GPU_COUNT when set, else the NVIDIA GPUs
    (``nvidia-smi -L``, or the driver's /proc entries) that CUDA_VISIBLE_DEVICES
    leaves visible, counted the way CUDA reads it (up to the first invalid id), as
    the jobs' claims will see them.
    """
    override = os.environ.get(GPU_COUNT_VAR, "").strip()
    if override:
        try:
            return max(int(override), 0), f"{GPU_COUNT_VAR}={override}"
        except ValueError:
            raise ValueError(f"{GPU_COUNT_VAR}={override!r}: a number of GPUs, please") from None
    found, source = _nvidia_gpus()
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if found is None or visible is None:
        return found, source
    usable = 0
    for item in (v.strip() for v in visible.split(",")):
        if not item.isdigit() or int(item) >= found:
            break
        usable += 1
    return usable, f"{source}, CUDA_VISIBLE_DEVICES={visible}"


def gpu_job_limit(requested: int | None, found: int | None) -> int | None:
    """The ``gpu`` resource a local run should have, or None to leave it as it is.

    Each GPU job holds its GPUs exclusively, so more GPU jobs than GPUs would only
    sit waiting for a GPU while holding their cores: the limit is the GPUs found,
    whether ``--resources gpu=N`` asked for more or named no limit at all. Where no
    GPU is found (or none can be counted), GPU jobs run on the CPU: no limit is set.
    """
    if not found:
        return None
    return found if requested is None or requested > found else None


def limit_gpu_jobs(workflow: Any) -> str | None:
    """Cap a local run's ``gpu`` resource at the GPUs present; returns the line to log, if any.

    Call it from the Snakefile (``workflow`` is Snakemake's): it acts only in the
    main Snakemake process of a local run, where Snakemake leaves ``nodes`` unset
    (cluster executors such as SLURM set it, and their scheduler assigns GPUs).
    """
    if not workflow.is_main_process or workflow.nodes is not None:
        return None
    resource = workflow.global_resources.get("gpu")
    requested = None if resource is None else resource.value
    if requested is not None and not isinstance(requested, int):
        return None
    found, source = local_gpu_count()
    limit = gpu_job_limit(requested, found)
    if limit is None:
        return None
    workflow.global_resources["gpu"] = limit
    asked = "no gpu limit given" if requested is None else f"--resources gpu={requested}"
    return (f"dermflow: {found} GPU(s) here ({source}), so GPU jobs hold at most {limit} "
            f"GPU(s) at once ({asked}): each GPU job holds its GPUs exclusively")
