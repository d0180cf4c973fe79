"""Hair removal throughput on real HAM10000 images (the 1/3-scale 200x150 copy).

Three rates per thread count, each the median of --repeat runs after a warm-up:
cleaning only (images already decoded, so the DullRazor steps alone), decode +
clean (JPEG read out of the zip, as remove_hair_all does), and the whole stage
(remove_hair_all: decode, clean, write both PNGs). Worker threads each run
OpenCV single-threaded, as remove_hair_all does, so images/s per core is the rate
divided by the threads used. Prints a Markdown table for benchmarks/RESULTS.md.

    python benchmarks/bench_hair.py --data .data/ham10000 --n 500 --threads 1 2
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import statistics
import tempfile
import time
import zipfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from dermflow.data.hair import HairParams, remove_hair, remove_hair_all
from dermflow.data.images import read_rgb, zip_ref
from dermflow.provenance import cpu_name

REPO = Path(__file__).resolve().parents[1]
ARCHIVE = "HAM10000_images_200x150.zip"


def rate(work: Callable[[], object], n: int, repeat: int) -> float:
    """Median images/s of ``work`` (which handles n images) over ``repeat`` timed runs."""
    work()  # warm-up: page cache, zip index, OpenCV's first-call setup
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        work()
        times.append(time.perf_counter() - start)
    return n / statistics.median(times)


def parallel(fn: Callable, items: list, threads: int) -> Callable[[], None]:
    """A run of ``fn`` over ``items`` on ``threads`` worker threads."""

    def run() -> None:
        with ThreadPoolExecutor(threads) as pool:
            for _ in pool.map(fn, items):
                pass

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=REPO / ".data/ham10000",
                        help=f"folder holding {ARCHIVE} (default .data/ham10000, where "
                             "benchmarks/gpu_proof.py --prepare copies it)")
    parser.add_argument("--n", type=int, default=500, help="images (the first n by name)")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--kernel-size", type=int, default=HairParams().kernel_size)
    args = parser.parse_args()

    archive = args.data / ARCHIVE
    with zipfile.ZipFile(archive) as zf:
        names = sorted(n for n in zf.namelist() if n.endswith(".jpg"))[: args.n]
    refs = [zip_ref(archive, name) for name in names]
    images = [read_rgb(ref) for ref in refs]
    table = pd.DataFrame({"image_id": [Path(n).stem for n in names], "path": refs})
    params = HairParams(kernel_size=args.kernel_size)
    cores = len(os.sched_getaffinity(0))
    height, width = images[0].shape[:2]
    hair = float(np.mean([remove_hair(image, params)[1].mean() for image in images]))

    print(f"<!-- {len(images)} images {width}x{height}, {params}, {cores} cores available, "
          f"mean mask share {hair:.3f}, OpenCV {cv2.__version__} -->")
    print("| date | device | n | threads | clean img/s | per core | decode+clean img/s "
          "| per core | stage img/s (+PNG writes) | per core |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for threads in args.threads:
        used = min(threads, cores)
        previous = cv2.getNumThreads()
        cv2.setNumThreads(1)
        try:
            clean = rate(parallel(lambda image: remove_hair(image, params), images, threads),
                         len(images), args.repeat)
            decoded = rate(parallel(lambda ref: remove_hair(read_rgb(ref), params), refs,
                                    threads), len(refs), args.repeat)
        finally:
            cv2.setNumThreads(previous)
        with tempfile.TemporaryDirectory() as tmp:
            stage = rate(partial(remove_hair_all, table, Path(tmp) / "i", Path(tmp) / "m", params,
                                 threads=threads), len(refs), args.repeat)
        print(f"| {dt.date.today()} | {cpu_name()} | {len(images)} | {threads} "
              f"| {clean:.0f} | {clean / used:.0f} | {decoded:.0f} | {decoded / used:.0f} "
              f"| {stage:.0f} | {stage / used:.0f} |")


if __name__ == "__main__":
    main()
