"""The log line format every stage writes, in its rule's log file and on stderr.

Snakemake runs jobs side by side on one console, so a job's lines carry a tag naming
it by its wildcards: ``[none_resnet50v2_deit]`` for an experiment's job,
``[strong_baseline fold=2 seed=0]`` under cross-validation, nothing for a job that
has no wildcards (there is only one of it). A process a job starts to work for it (DDP
rank 0) writes the job's lines too: to the same log, appended, and to the console.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def job_tag(wildcards: Iterable[tuple[str, object]]) -> str:
    """``[experiment key=value ...]``: the experiment's name bare and first; ``""`` if none."""
    pairs = sorted(wildcards, key=lambda pair: pair[0] != "experiment")
    parts = [str(value) if key == "experiment" else f"{key}={value}" for key, value in pairs]
    return f"[{' '.join(parts)}]" if parts else ""


def line_format(tag: str = "") -> str:
    """FORMAT with ``tag`` before the logger's name (a ``%`` in a wildcard's value is
    printed as itself, not read as a format field)."""
    return FORMAT.replace("%(name)s", f"{tag.replace('%', '%%')} %(name)s") if tag else FORMAT


class JobFormatter(logging.Formatter):
    """A job's lines: line_format with the job's tag."""

    def __init__(self, tag: str = "") -> None:
        super().__init__(line_format(tag))


def job_formatter() -> logging.Formatter:
    """How this job writes its lines (the JobFormatter a stage gave the root logger's
    handlers; untagged outside a stage). A process that logs for the job (a DDP rank)
    takes it along, so its lines name the job as the job's own do."""
    for handler in logging.getLogger().handlers:
        if isinstance(handler.formatter, JobFormatter):
            return handler.formatter
    return JobFormatter()


def log_as_job(log_file: str | None, formatter: logging.Formatter) -> None:
    """In a process started by a job: write INFO lines as the job does, to stderr and
    appended to the job's ``log_file`` (which the job keeps writing too)."""
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_file:
        handlers.append(logging.FileHandler(log_file, mode="a"))
    root = logging.getLogger()
    for handler in handlers:
        handler.setFormatter(formatter)
        root.addHandler(handler)
    root.setLevel(logging.INFO)
