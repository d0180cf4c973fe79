"""Fusion classifier training throughput: dermflow's loop vs a bare loop of the same model.

The proposed ResNet50V2-DeiT cross-attention fusion model (config.yaml's
`classifier` settings), fine-tuning stage (last backbone blocks unfrozen), same
process, device, batch size and precision for both loops; see bench_baseline.py
for what each loop does. Prints a Markdown row for benchmarks/RESULTS.md.

    python benchmarks/bench_classifier.py --batch 128 --steps 40 [--compile]
"""

from __future__ import annotations

import datetime as dt

import torch
import yaml
from bench_baseline import bare_loop, dermflow_loop, loop_arguments

from dermflow.config import validate_config
from dermflow.models import factory
from dermflow.models.freezing import FreezableClassifier
from dermflow.provenance import cpu_name


def main() -> None:
    parser = loop_arguments(__doc__, "resnet50v2_deit")
    parser.add_argument("--config", default="config.yaml", help="takes its classifier section")
    args = parser.parse_args()
    with open(args.config) as fh:
        settings = {**validate_config(yaml.safe_load(fh))["classifier"], "pretrained": False}
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.backends.cudnn.benchmark = True
    name = torch.cuda.get_device_name(0) if device.type == "cuda" else cpu_name()

    def make_model() -> FreezableClassifier:
        model = factory.create(args.model, image_size=args.size, settings=settings,
                               weights_dir=None, num_classes=7)
        model.freeze_backbones()
        model.unfreeze(settings["unfreeze_blocks"])
        return model

    bare = bare_loop(make_model, device, args.batch, args.size, args.steps, args.precision,
                     args.compile)
    ours = dermflow_loop(make_model, device, args.batch, args.size, args.steps, args.precision,
                         args.compile)
    print("| date | device | torch | model | batch | size | precision | compile "
          "| bare img/s | dermflow img/s | ratio |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    print(f"| {dt.date.today()} | {name} | {torch.__version__} | {args.model} | {args.batch} "
          f"| {args.size} | {args.precision} | {args.compile} | {bare:.0f} | {ours:.0f} "
          f"| {ours / bare:.2f} |")


if __name__ == "__main__":
    main()
