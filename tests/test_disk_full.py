"""A full disk: one line naming the file, the bytes needed and free; no temporary left behind.

Each test mounts a 2 MB tmpfs (the suite runs as root in CI's container; elsewhere the
tests skip, saying why) and fills it to a known free space.
"""

from __future__ import annotations

import logging
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from dermflow.data.hair import HairParams, remove_hair_all
from dermflow.data.images import read_rgb, write_image
from dermflow.data.validate import image_sources, validate_dataset
from dermflow.stage import run_stage

EARLIER = b"an earlier stage's output\n"


@pytest.fixture
def small_disk(tmp_path: Path):
    """A 2 MB file system holding one earlier output."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(disk)],
                             capture_output=True, text=True) if shutil.which("mount") else None
    if mounted is None or mounted.returncode:
        pytest.skip("cannot mount a tmpfs here (needs root, or a container allowed to mount): "
                    + (mounted.stderr.strip() if mounted else "no mount command"))
    try:
        (disk / "earlier.csv").write_bytes(EARLIER)
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=True)


def fill(disk: Path, leave: int) -> None:
    """Fill ``disk`` until ``leave`` bytes are free (a multiple of tmpfs's 4 kB page)."""
    (disk / "filler").write_bytes(b"\0" * (shutil.disk_usage(disk).free - leave))
    assert shutil.disk_usage(disk).free == leave


def job(tmp_path: Path, rule: str, outputs: list[Path]) -> SimpleNamespace:
    """What run_stage reads of Snakemake's ``snakemake`` object; the log off the full disk."""
    return SimpleNamespace(rule=rule, log=[str(tmp_path / "logs" / f"{rule}.log")],
                           output=[str(p) for p in outputs], config={}, params={},
                           resources={})


def assert_left_clean(disk: Path) -> None:
    assert not list(disk.rglob("*.tmp")), "a temporary was left on the full disk"
    assert (disk / "earlier.csv").read_bytes() == EARLIER


# In a process of its own: without the space reserved, filling the memory-mapped cache on a
# full disk kills the process with SIGBUS (which would take the test runner with it).
CACHE_JOB = """
import sys
from types import SimpleNamespace
import pandas as pd
from dermflow.data.cache import build_cache
from dermflow.stage import run_stage

log, manifest, npy, index = sys.argv[1:]
smk = SimpleNamespace(rule="cache_images", log=[log], output=[npy, index], config={},
                      params={}, resources={})
with run_stage(smk):
    build_cache(pd.read_csv(manifest), 32, npy, index)
"""


def test_cache_on_a_full_disk_names_the_bytes_and_leaves_no_temporary(tiny_dataset, small_disk,
                                                                        tmp_path):
    manifest, _ = validate_dataset(tiny_dataset / "HAM10000_metadata.csv",
                                   image_sources(tiny_dataset))
    manifest.to_csv(tmp_path / "manifest.csv", index=False)
    npy = small_disk / "cache" / "images_32.npy"
    needed = 128 + len(manifest) * 32 * 32 * 3  # the .npy header and the array
    fill(small_disk, 16 * 4096)  # room for the header and part of the array
    log = tmp_path / "logs" / "cache_images.log"
    args = (log, tmp_path / "manifest.csv", npy, small_disk / "cache" / "index_32.csv")
    done = subprocess.run([sys.executable, "-c", CACHE_JOB, *map(str, args)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, f"the job ended with {done.returncode}: {done.stderr[-2000:]}"
    text = log.read_text()
    line = re.search(rf"disk full: {re.escape(str(npy))} needs {needed:,} bytes, ([\d,]+) bytes "
                     rf"free on {re.escape(str(small_disk))}; free some space", text)
    assert line, text
    assert int(line.group(1).replace(",", "")) <= 16 * 4096
    assert "Traceback" not in text and "a bug" not in text
    assert not npy.exists()
    assert_left_clean(small_disk)


def test_hair_removal_on_a_full_disk_stops_at_the_file_that_does_not_fit(tiny_dataset,
                                                                        small_disk, tmp_path):
    manifest, _ = validate_dataset(tiny_dataset / "HAM10000_metadata.csv",
                                   image_sources(tiny_dataset))
    images, masks = small_disk / "hair" / "images", small_disk / "hair" / "masks"
    (small_disk / "hair" / "images").mkdir(parents=True)
    (small_disk / "hair" / "masks").mkdir()
    fill(small_disk, 4 * 4096)  # about two images and their masks
    smk = job(tmp_path, "remove_hair", [images, masks])
    with pytest.raises(SystemExit), run_stage(smk):
        remove_hair_all(manifest, images, masks, HairParams(kernel_size=9), threads=1)
    text = Path(smk.log[0]).read_text()
    line = re.search(rf"disk full: {re.escape(str(small_disk))}/hair/(images|masks)/"
                     r"ISIC_\d+\.png needs ([\d,]+) bytes, ([\d,]+) bytes free", text)
    assert line, text
    assert int(line.group(2).replace(",", "")) > int(line.group(3).replace(",", ""))
    assert "Traceback" not in text and "a bug" not in text
    written = sorted(images.glob("*.png"))
    assert written, "the images that fitted were written"
    for path in written:  # whole files: each decodes
        assert read_rgb(str(path)).shape == (30, 40, 3)
    assert_left_clean(small_disk)


def test_a_log_on_the_full_disk_leaves_the_one_line_on_stderr(small_disk, capsys):
    smk = SimpleNamespace(rule="remove_hair", log=[str(small_disk / "logs" / "remove_hair.log")],
                          output=[str(small_disk / "hair" / "images")], config={}, params={},
                          resources={})
    with pytest.raises(SystemExit), run_stage(smk):
        logging.getLogger("dermflow.remove_hair").info("%s", "x" * 4000)  # near a page's end
        fill(small_disk, 0)  # the disk fills up while the job runs
        write_image(small_disk / "hair" / "images" / "ISIC_0000000.png",
                    np.zeros((30, 40, 3), np.uint8))
    err = capsys.readouterr().err
    assert re.search(r"disk full: \S+/ISIC_0000000\.png needs [\d,]+ bytes, 0 bytes free", err)
    assert "Traceback" not in err and "Logging error" not in err, err
    assert_left_clean(small_disk)
