"""Training throughput with the recipe options: the strong baseline's loop vs a bare loop.

The strong baseline's model (timm ResNetV2-50 alone, dermflow.models.plain), same
process, device, batch size and precision for every loop: the bare loop of
bench_baseline.py (one fixed batch, forward, backward, optimizer step), dermflow's fit
with its defaults (Adam, constant LR, uniform epochs), and fit with every option of the
``strong_baseline`` recipe on (AdamW, one-cycle LR set per batch, label smoothing,
square-root balanced sampling, EMA of the weights). Prints a Markdown table for
benchmarks/RESULTS.md; the goal is >= 0.9x the bare loop.

    python benchmarks/bench_recipe.py --batch 128 --steps 40
"""

from __future__ import annotations

import datetime as dt

import torch
from bench_baseline import bare_loop, dermflow_loop, loop_arguments

from dermflow.models import factory
from dermflow.models.registry import RECIPES
from dermflow.provenance import cpu_name

TRAIN_KEYS = ("optimizer", "weight_decay", "lr_schedule", "lr_warmup_epochs",
              "label_smoothing", "sampling", "sampling_power", "ema")


def main() -> None:
    parser = loop_arguments(__doc__, "resnetv2_50")
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.backends.cudnn.benchmark = True
    name = torch.cuda.get_device_name(0) if device.type == "cuda" else cpu_name()
    recipe = {k: RECIPES["strong_baseline"][k] for k in TRAIN_KEYS}
    recipe["lr_warmup_epochs"] = 1  # of the benchmark's two epochs

    def make_model() -> torch.nn.Module:
        return factory.create(args.model, num_classes=7, image_size=args.size,
                              settings={"pretrained": False}, weights_dir=None)

    loop = (make_model, device, args.batch, args.size, args.steps, args.precision, args.compile)
    bare = bare_loop(*loop)
    plain = dermflow_loop(*loop)
    strong = dermflow_loop(*loop, **recipe)
    print("| date | device | torch | model | batch | size | precision | compile "
          "| bare img/s | dermflow img/s (defaults) | ratio | dermflow img/s (strong_baseline "
          "options) | ratio |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    print(f"| {dt.date.today()} | {name} | {torch.__version__} | {args.model} | {args.batch} "
          f"| {args.size} | {args.precision} | {args.compile} | {bare:.1f} | {plain:.1f} "
          f"| {plain / bare:.2f} | {strong:.1f} | {strong / bare:.2f} |")


if __name__ == "__main__":
    main()
