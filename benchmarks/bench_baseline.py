"""Baseline training and SmoothGrad throughput: dermflow's loop vs a bare timm loop.

Both run in the same process on the same device with the same model, batch size
and precision; the bare loop trains on one random tensor already on the GPU, so
it is the ceiling dermflow's loop (index gather, GPU augmentation, loss, Adam)
is measured against. Prints a Markdown table for benchmarks/RESULTS.md.

    python benchmarks/bench_baseline.py --batch 128 --steps 40 [--compile]
"""

from __future__ import annotations

import argparse
import datetime as dt
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np
import timm
import torch
import torch.nn.functional as F

from dermflow.config import schema_defaults
from dermflow.provenance import cpu_name
from dermflow.training.attention import smoothgrad
from dermflow.training.baseline import train_config
from dermflow.training.batches import ImageTensor
from dermflow.training.loop import fit
from dermflow.training.precision import autocast


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def bare_loop(make_model: Callable[[], torch.nn.Module], device: torch.device, batch: int,
              size: int, steps: int, precision: str, compile_: bool) -> float:
    """images/s of forward+backward+Adam on a fixed random batch."""
    model = make_model().to(device, memory_format=torch.channels_last)
    step_model = torch.compile(model) if compile_ else model
    opt = torch.optim.Adam((p for p in model.parameters() if p.requires_grad), lr=1e-4)
    x = torch.randn(batch, 3, size, size, device=device).contiguous(
        memory_format=torch.channels_last)
    y = torch.randint(0, 7, (batch,), device=device)

    def step() -> None:
        with autocast(device, precision):
            loss = F.cross_entropy(step_model(x).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return timed(step, batch, steps, device)


def timed(step: Callable[[], None], batch: int, steps: int, device: torch.device) -> float:
    """images/s of ``steps`` calls of ``step`` after a warm-up (cudnn autotuning, caches)."""
    for _ in range(max(5, steps // 4)):
        step()
    sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    sync(device)
    return batch * steps / (time.perf_counter() - start)


def dermflow_loop(make_model: Callable[[], torch.nn.Module], device: torch.device, batch: int,
                  size: int, steps: int, precision: str, compile_: bool,
                  **options: Any) -> float:
    """images/s of dermflow's fit() (second epoch: warm-up and compile excluded), with
    TrainConfig ``options`` (the recipe keys) on top of the baseline's defaults."""
    n = batch * steps
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n + batch, size, size, 3), dtype=np.uint8)
    labels = rng.integers(0, 7, n + batch)
    data = ImageTensor(images, labels, device, (0.5,) * 3, (0.5,) * 3)
    model = make_model()
    baseline = train_config(schema_defaults()["baseline"], compile_=compile_,
                            precision=precision, seed=0, extra={})
    cfg = replace(baseline, epochs=2, batch_size=batch, **options)
    result = fit(model, data, np.arange(n), np.arange(n, n + batch), cfg)
    return float(result.history["images_per_s"].iloc[-1])


def smoothgrad_rate(model_name: str, device: torch.device, size: int, samples: int,
                    batch: int, precision: str) -> float:
    """images/s of SmoothGrad with ``samples`` noisy copies per image."""
    n = batch * 8
    rng = np.random.default_rng(0)
    data = ImageTensor(rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8),
                       rng.integers(0, 7, n), device, (0.5,) * 3, (0.5,) * 3)
    model = timm.create_model(model_name, num_classes=7).to(device,
                                                            memory_format=torch.channels_last)
    smoothgrad(model, data, np.arange(batch), samples=samples, batch_size=batch,
               precision=precision)
    sync(device)
    start = time.perf_counter()
    smoothgrad(model, data, np.arange(n), samples=samples, batch_size=batch, precision=precision)
    sync(device)
    return n / (time.perf_counter() - start)


def loop_arguments(doc: str, model: str) -> argparse.ArgumentParser:
    """The options every training-loop benchmark takes (this one's, bench_classifier's and
    bench_recipe's)."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--model", default=model)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--precision", default="bf16")
    parser.add_argument("--compile", action="store_true")
    return parser


def main() -> None:
    parser = loop_arguments(__doc__, "resnetv2_50")
    parser.add_argument("--sg-samples", type=int, default=25)
    parser.add_argument("--sg-batch", type=int, default=8)
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.backends.cudnn.benchmark = True
    name = torch.cuda.get_device_name(0) if device.type == "cuda" else cpu_name()
    def make_model() -> torch.nn.Module:
        return timm.create_model(args.model, num_classes=7)

    bare = bare_loop(make_model, device, args.batch, args.size, args.steps, args.precision,
                     args.compile)
    ours = dermflow_loop(make_model, device, args.batch, args.size, args.steps, args.precision,
                         args.compile)
    sg = smoothgrad_rate(args.model, device, args.size, args.sg_samples, args.sg_batch,
                         args.precision)
    print("| date | device | torch | model | batch | size | precision | compile "
          "| bare img/s | dermflow img/s | ratio | SmoothGrad img/s (samples) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    print(f"| {dt.date.today()} | {name} | {torch.__version__} | {args.model} | {args.batch} "
          f"| {args.size} | {args.precision} | {args.compile} | {bare:.0f} | {ours:.0f} "
          f"| {ours / bare:.2f} | {sg:.1f} ({args.sg_samples}) |")


if __name__ == "__main__":
    main()
