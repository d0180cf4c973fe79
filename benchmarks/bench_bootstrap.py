"""Bootstrap time: B lesion-cluster resamples of n test predictions, every metric of the table
(count-based per class and overall, macro ROC AUC, calibration error) per resample.

    python benchmarks/bench_bootstrap.py --n 1000 3000 10000 --resamples 1000
"""

from __future__ import annotations

import argparse
import datetime as dt
import time

import numpy as np
import pandas as pd

from dermflow.evaluation.bootstrap import resample_metrics, summarize
from dermflow.labels import CLASSES
from dermflow.provenance import cpu_name


def predictions(n: int, rng: np.random.Generator) -> pd.DataFrame:
    """n predictions of HAM10000's shape: 1-6 images per lesion, about 80% right."""
    lesions = np.repeat(np.arange(n), rng.integers(1, 7, n))[:n]
    labels = rng.integers(0, len(CLASSES), n)
    probs = rng.dirichlet(np.ones(len(CLASSES)), n)
    right = rng.random(n) < 0.8
    probs[right, labels[right]] += 1.0
    probs /= probs.sum(1, keepdims=True)
    return pd.DataFrame({"image_id": np.arange(n).astype(str), "lesion_id": lesions,
                         "label": labels, **{f"prob_{c}": probs[:, k]
                                             for k, c in enumerate(CLASSES)}})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, nargs="+", default=[1000, 3000, 10000])
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    print("| date | device | n | lesions | resamples | seconds (median of "
          f"{args.repeats}) |\n|---|---|---|---|---|---|")
    rng = np.random.default_rng(0)
    for n in args.n:
        rows = predictions(n, rng)
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            summarize(resample_metrics(rows, resamples=args.resamples, seed=0), list(CLASSES))
            times.append(time.perf_counter() - start)
        print(f"| {dt.date.today()} | {cpu_name()} | {n} | {rows['lesion_id'].nunique()} | "
              f"{args.resamples} | {np.median(times):.3f} |")


if __name__ == "__main__":
    main()
