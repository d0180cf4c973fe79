"""Bad input and interruptions through the real DAG, on tiny generated datasets.

Each test stops early (``--until``), without hair removal, so it takes seconds.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import copy_workflow, snakemake

pytestmark = pytest.mark.workflow
QUICK = ("--cores", "1", "--config", "hair_removal={enabled: false}", "image_size=32")


def local(root: Path) -> str:
    return f"dataset={{source: local, path: {root}}}"


def test_interrupted_writes_leave_no_temporaries(tmp_path, tiny_dataset):
    workdir = copy_workflow(tmp_path / "w")
    cache = workdir / "results" / "cache"
    cache.mkdir(parents=True)
    debris = [cache / ".images_32.npy.k2j_x9a0.tmp", cache / ".index_32.csv.0a1b2c3d.tmp"]
    for path in debris:  # what a cache_images killed mid-write leaves
        path.write_bytes(b"\0" * 1024)
    snakemake(workdir, *QUICK, local(tiny_dataset), "--until", "cache_images")
    assert (cache / "images_32.npy").is_file()
    assert not list(cache.glob(".*.tmp"))
