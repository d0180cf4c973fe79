"""What cross-validation costs: the demo DAG with K lesion-grouped folds vs one split.

Runs the whole DAG from scratch twice in private copies of the workflow, the same
settings both times (the demo profile, two experiments: the C'GAN and no balancing,
ASFF-ResNet50, tiny budgets as tests/test_workflow_cv.py uses) except ``cv.folds``, and
times each run from outside (Snakemake's start to its exit). Under ``protocol: grouped``
each fold repeats the whole learning chain (baseline, attention maps, GAN, synthesis,
quality check, classifiers), so the ratio is the price of K folds on a small DAG, where
each job's start-up weighs as much as its work. Prints a Markdown row for
benchmarks/RESULTS.md.

    python benchmarks/bench_crossval.py --folds 3 [--cores 2]
"""

from __future__ import annotations

import argparse
import datetime as dt
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from dermflow.provenance import cpu_name

REPO = Path(__file__).resolve().parents[1]
PARTS = ("Snakefile", "config.yaml", "workflow", "profiles", "envs", "src")
NAMES = ("cgan_asff", "none_asff")


def overrides(folds: int) -> dict:
    """The settings of both runs, but for the folds."""
    return {
        "cv": {"folds": folds},
        "baseline": {"epochs": 2}, "attention": {"samples": 2}, "gan": {"epochs": 2},
        "quality": {"lpips_pairs": 20}, "classifier": {"epochs": 2},
        "experiments": [{"name": name, "balance": name.split("_")[0], "model": "asff_resnet50",
                         "overrides": {"lr": 1.0e-3}} for name in NAMES],
        "report": {"comparisons": [list(NAMES)], "bootstrap": 200},
    }


def timed_run(folds: int, cores: int, root: Path) -> tuple[float, int]:
    """Wall seconds of the whole DAG from scratch, and its number of jobs."""
    work = root / f"folds{folds}"
    work.mkdir()
    for part in PARTS:
        source = REPO / part
        if source.is_dir():
            shutil.copytree(source, work / part, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, work / part)
    (work / "bench.yaml").write_text(yaml.safe_dump(overrides(folds)))
    snakemake = str(Path(sys.executable).with_name("snakemake"))
    args = [snakemake, "--profile", "profiles/demo", "--cores", str(cores),
            "--configfile", "profiles/demo/demo.yaml", "bench.yaml"]
    start = time.monotonic()
    done = subprocess.run(args, cwd=work, capture_output=True, text=True)
    seconds = time.monotonic() - start
    if done.returncode != 0:
        sys.exit(f"folds={folds}: snakemake failed\n{done.stderr[-4000:]}")
    steps = re.findall(r"(\d+) of (\d+) steps \(100%\) done", done.stderr)
    return seconds, int(steps[-1][1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folds", type=int, default=3)
    parser.add_argument("--cores", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        one, one_jobs = timed_run(1, args.cores, Path(tmp))
        k, k_jobs = timed_run(args.folds, args.cores, Path(tmp))
    print("| date | device | cores | one split: jobs, wall s | "
          f"{args.folds} folds: jobs, wall s | cost ratio |")
    print("|---|---|---|---|---|---|")
    print(f"| {dt.date.today()} | {cpu_name()} | {args.cores} | {one_jobs}, {one:.0f} | "
          f"{k_jobs}, {k:.0f} | {k / one:.2f} |")


if __name__ == "__main__":
    main()
