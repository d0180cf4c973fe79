"""The log line format every stage writes, in its rule's log file and on stderr.

Snakemake runs jobs side by side on one console, so a job's lines carry a tag naming
it by its wildcards: ``[none_resnet50v2_deit]`` for an experiment's job,
``[strong_baseline fold=2 seed=0]`` under cross-validation, nothing for a job that
has no wildcards (there is only one of it).
"""

from __future__ import annotations

from collections.abc import Iterable

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def job_tag(wildcards: Iterable[tuple[str, object]]) -> str:
    """``[experiment key=value ...]``: the experiment's name bare and first; ``""`` if none."""
    pairs = sorted(wildcards, key=lambda pair: pair[0] != "experiment")
    parts = [str(value) if key == "experiment" else f"{key}={value}" for key, value in pairs]
    return f"[{' '.join(parts)}]" if parts else ""


def line_format(tag: str = "") -> str:
    """FORMAT with ``tag`` before the logger's name."""
    return FORMAT.replace("%(name)s", f"{tag} %(name)s") if tag else FORMAT
