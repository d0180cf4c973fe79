"""Whether a training job compiles its model (``compile: auto | true | false``), decided
before training.

torch.compile compiles lazily, at the first step, so a machine that cannot compile
would fail the job only then. Its backend needs more than torch: on CUDA, Triton builds
each kernel's launcher with a C compiler (CC, else gcc, else clang: Triton's
``_find_compiler``) against Python's headers (``Python.h``; pytorch/pytorch#92745,
#90768); on the CPU, Inductor builds C++ (CXX, else g++, else clang++). So the
decision checks those first and then compiles and runs a one-op function on the
device (a few seconds, once per process): ``auto`` falls back to eager mode with a
warning naming what is missing, ``true`` stops the job before training with that
message.
"""

from __future__ import annotations

import functools
import logging
import os
import shutil
import sysconfig
from pathlib import Path

import torch
from torch.utils._triton import has_triton

from dermflow.errors import DermflowError

log = logging.getLogger(__name__)


class CompileError(DermflowError):
    """compile: true on a machine where torch.compile cannot work."""


def python_headers() -> Path:
    """Where Python.h must be, as Triton looks for it (Debian's posix_local scheme is
    read as posix_prefix)."""
    scheme = sysconfig.get_default_scheme()
    scheme = "posix_prefix" if scheme == "posix_local" else scheme
    return Path(sysconfig.get_paths(scheme=scheme)["include"]) / "Python.h"


def _compiler(variable: str, names: tuple[str, ...]) -> str | None:
    """The compiler ``variable`` names (if it runs) or the first of ``names`` on PATH."""
    chosen = os.environ.get(variable)
    if chosen:
        return shutil.which(chosen)
    return next(filter(None, map(shutil.which, names)), None)


def missing(device: torch.device) -> list[str]:
    """What torch.compile's backend needs on ``device`` that this machine lacks."""
    lacks = []
    if device.type == "cuda":
        if not has_triton():
            lacks.append("Triton (pip install triton)")
        if _compiler("CC", ("gcc", "clang")) is None:
            lacks.append("a C compiler (gcc or clang on PATH, or CC)")
    elif _compiler("CXX", ("g++", "clang++")) is None:
        lacks.append("a C++ compiler (g++ or clang++ on PATH, or CXX)")
    headers = python_headers()
    if not headers.is_file():
        lacks.append(f"Python's headers ({headers}: the python3-dev package of this Python)")
    return lacks


def _twice_plus_one(x: torch.Tensor) -> torch.Tensor:
    return x * 2 + 1


@functools.cache
def compile_problem(device: torch.device) -> str | None:
    """Why torch.compile cannot work on ``device`` here, or None when a one-op function
    compiles and runs there."""
    lacks = missing(device)
    if lacks:
        return "it needs " + " and ".join(lacks)
    try:
        x = torch.arange(4, dtype=torch.float32, device=device)
        if not torch.equal(torch.compile(_twice_plus_one)(x), x * 2 + 1):
            return "a compiled test function computed a wrong result"
    except Exception as err:  # whatever the backend raised is the reason
        lines = str(err).strip().splitlines()
        return f"compiling a test function failed: {type(err).__name__}: " + (
            lines[0] if lines else "")
    return None


@functools.cache
def _fall_back(key: str, problem: str) -> None:
    """Warn once per process (a job decides for each of its training stages)."""
    log.warning("%s: auto: torch.compile cannot work on this machine (%s): training in eager "
                "mode", key, problem)


def resolve_compile(setting: bool | str, device: torch.device,
                    key: str = "classifier.compile") -> bool:
    """Whether to compile: ``auto`` on CUDA only (where long runs repay the compile time)
    and where compiling works; ``true`` wherever it works, else CompileError naming ``key``."""
    wanted = device.type == "cuda" if setting == "auto" else bool(setting)
    if not wanted:
        return False
    problem = compile_problem(device)
    if problem is None:
        return True
    if setting == "auto":
        _fall_back(key, problem)
        return False
    raise CompileError(f"{key}: true, but torch.compile cannot work on this machine ({problem}):"
                       " install what it needs, or set it to auto (eager mode where it cannot)"
                       " or false")
