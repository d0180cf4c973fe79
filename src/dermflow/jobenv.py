"""The environment every job of the workflow inherits."""

from __future__ import annotations

import os


def export_src(src: str) -> None:
    """Put the workflow's own library first on PYTHONPATH, for this process's jobs.

    Jobs (local, conda or cluster) then run the dermflow that sits beside the
    Snakefile, whatever else is installed: workflow and library stay in step.
    """
    current = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (src, current) if p)
