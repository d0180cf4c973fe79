"""What every result folder records: config, package versions, git commit, device."""

from __future__ import annotations

import datetime as dt
import os
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

from dermflow.atomic import write_json

# What this process read that its config does not pin (record_source), for its provenance.
_SOURCES: dict[str, Any] = {}

PACKAGES = (
    "dermflow", "snakemake", "torch", "torchvision", "timm", "numpy", "pandas",
    "scikit-learn", "opencv-python-headless", "torch-fidelity", "lpips",
)


def package_versions() -> dict[str, str]:
    """Installed versions of the packages that shape results."""
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def git_commit(cwd: str | os.PathLike[str] = ".") -> str:
    """HEAD of the workflow checkout, with '+dirty' for uncommitted changes."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True,
                              text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd,
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("+dirty" if dirty else "")


def cpu_name() -> str:
    """CPU model, for a record of where CPU stages ran."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_description() -> str:
    """The GPU(s) this process used, or the CPU: read after the work, so it is what ran."""
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_initialized():
        names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        visible = os.environ.get("CUDA_VISIBLE_DEVICES", "all")
        return f"cuda: {', '.join(names)} (CUDA_VISIBLE_DEVICES={visible})"
    return f"cpu: {cpu_name()} ({os.cpu_count()} cores)"


def record_source(key: str, value: Any) -> None:
    """Name a source this stage read (a data record's resolved version, a file's checksum)
    in the provenance it writes: the config says what was asked for, this what was had."""
    _SOURCES[key] = value


def clear_sources() -> None:
    """Forget the sources recorded so far: a stage starting records only what it reads
    (several stages can run in one process: the CLI, tests)."""
    _SOURCES.clear()


def write_provenance(folder: str | os.PathLike[str], stage: str, config: dict[str, Any]) -> Path:
    """Write ``folder/provenance.json`` for ``stage``."""
    path = Path(folder) / "provenance.json"
    write_json({
        "stage": stage,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "config": config,
        "packages": package_versions(),
        "python": platform.python_version(),
        "git_commit": git_commit(),
        "device": device_description(),
        "host": platform.node(),
        **({"sources": dict(_SOURCES)} if _SOURCES else {}),
    }, path)
    return path
