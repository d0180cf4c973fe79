"""Bootstrap time: B resamples of n test predictions, every count-based metric per resample.

    python benchmarks/bench_bootstrap.py --n 1000 3000 10000 --resamples 1000
"""

from __future__ import annotations

import argparse
import datetime as dt
import time

import numpy as np

from dermflow.evaluation.metrics import bootstrap, bootstrap_samples, summarize_bootstrap
from dermflow.labels import CLASSES
from dermflow.provenance import cpu_name


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, nargs="+", default=[1000, 3000, 10000])
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    print("| date | device | n | resamples | seconds (median of "
          f"{args.repeats}) |\n|---|---|---|---|---|")
    rng = np.random.default_rng(0)
    for n in args.n:
        labels = rng.integers(0, len(CLASSES), n)
        preds = np.where(rng.random(n) < 0.8, labels, rng.integers(0, len(CLASSES), n))
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            values = bootstrap(labels, preds, list(CLASSES),
                               bootstrap_samples(n, args.resamples, seed=0))
            summarize_bootstrap(values, list(CLASSES))
            times.append(time.perf_counter() - start)
        print(f"| {dt.date.today()} | {cpu_name()} | {n} | {args.resamples} "
              f"| {np.median(times):.3f} |")


if __name__ == "__main__":
    main()
