"""A plain reference training loop on a finished run's own images and split, scored against
one of that run's experiments on the same test images (does the experiment do at least as
well?).

A comparison between figures measured on different test splits mixes the split's luck
into the difference, so this trains the reference loop itself (timm ResNet-18
from scratch, AdamW one-cycle, square-root balanced sampling, label smoothing 0.1, random
flips, flip TTA, the final epoch kept) on the run's cached images (hair removed) and its
train split, predicts its test split, and compares the two prediction tables with the
pipeline's own paired lesion-cluster bootstrap. The loop shares no training code with
dermflow on purpose: it is the outside reference.

    python benchmarks/reference_loop.py --run . --experiment strong_baseline --epochs 20
"""

from __future__ import annotations

import argparse
import datetime as dt
import time
from pathlib import Path

import numpy as np
import pandas as pd
import timm
import torch
import torch.nn.functional as F

from dermflow.evaluation.bootstrap import resample_metrics, summarize
from dermflow.evaluation.metrics import HEADLINE, point
from dermflow.evaluation.predictions import probabilities, test_rows
from dermflow.evaluation.significance import paired_difference
from dermflow.labels import CLASSES
from dermflow.provenance import cpu_name

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def load(run: Path, size: int) -> tuple[torch.Tensor, pd.DataFrame]:
    """The run's normalised NCHW images and their index with the split column."""
    images = np.load(run / f"results/cache/images_{size}.npy")
    index = pd.read_csv(run / f"results/cache/index_{size}.csv")
    split = pd.read_csv(run / "results/split/split.csv")[["image_id", "split"]]
    index = index.merge(split, on="image_id", how="left", validate="one_to_one")
    if not (index["row"].to_numpy() == np.arange(len(images))).all():
        raise SystemExit(f"{run}/results/cache/index_{size}.csv is not in the cache's row order")
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float().div_(255)
    x = (x - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)
    return x, index


def flip_tta(model: torch.nn.Module, x: torch.Tensor, rows: np.ndarray) -> np.ndarray:
    model.eval()
    out = []
    with torch.no_grad():
        for i in range(0, len(rows), 256):
            batch = x[rows[i:i + 256]]
            out.append((model(batch).softmax(1) + model(batch.flip(3)).softmax(1)) / 2)
    return torch.cat(out).numpy()


def train(x: torch.Tensor, index: pd.DataFrame, epochs: int, batch: int, seed: int,
          ) -> torch.nn.Module:
    torch.manual_seed(seed)
    train_rows = torch.from_numpy(np.flatnonzero(index["split"] == "train"))
    labels = torch.tensor(index["label"].to_numpy())
    counts = torch.bincount(labels[train_rows], minlength=len(CLASSES)).float()
    weights = (1 / counts.sqrt())[labels[train_rows]]  # class weights 1/f^0.5
    model = timm.create_model("resnet18", pretrained=False, num_classes=len(CLASSES))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05)
    steps = len(train_rows) // batch
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=1e-3,
                                                   total_steps=epochs * steps)
    val = np.flatnonzero(index["split"] == "val")
    started = time.perf_counter()
    for epoch in range(epochs):
        model.train()
        order = train_rows[torch.multinomial(weights, len(train_rows), replacement=True)]
        for step in range(steps):
            rows = order[step * batch:(step + 1) * batch]
            xb = x[rows]
            for dim in (2, 3):  # vertical and horizontal flips, each with p = 0.5
                flip = torch.rand(len(rows)) < 0.5
                xb[flip] = xb[flip].flip(dim)
            loss = F.cross_entropy(model(xb), labels[rows], label_smoothing=0.1)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
        scores = point(labels[val].numpy(), flip_tta(model, x, val), ("balanced_accuracy",))
        print(f"epoch {epoch + 1}/{epochs}  val balanced accuracy "
              f"{scores['balanced_accuracy']:.3f}  {time.perf_counter() - started:.0f} s",
              flush=True)
    return model


def predictions(model: torch.nn.Module, x: torch.Tensor, index: pd.DataFrame) -> pd.DataFrame:
    """The test split's predictions in predict's table layout."""
    test = index[index["split"] == "test"]
    probs = flip_tta(model, x, test.index.to_numpy())
    table = test[["image_id", "lesion_id", "split", "dx", "label"]].assign(source="real")
    for k, name in enumerate(CLASSES):
        table[f"prob_{name}"] = probs[:, k]
    return table.assign(pred=probs.argmax(1)).sort_values("image_id").reset_index(drop=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, default=Path("."), help="a finished run's folder")
    parser.add_argument("--experiment", default="strong_baseline")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--resamples", type=int, default=1000)
    args = parser.parse_args()
    x, index = load(args.run, args.size)
    started = time.perf_counter()
    model = train(x, index, args.epochs, args.batch, args.seed)
    minutes = (time.perf_counter() - started) / 60
    ours = test_rows(args.run / f"results/experiments/{args.experiment}/predictions.csv")
    reference = predictions(model, x, index)
    if not ours["image_id"].equals(reference["image_id"]):
        raise SystemExit(f"{args.experiment}'s test images are not the run's test split")
    names = tuple(HEADLINE)
    tables = {"ours": ours, "reference": reference}
    scores = {label: point(rows["label"].to_numpy(), probabilities(rows), names)
              for label, rows in tables.items()}
    drawn = {label: resample_metrics(rows, resamples=args.resamples, seed=0, names=names)
             for label, rows in tables.items()}
    intervals = {label: summarize(values, list(CLASSES)).set_index("metric")
                 for label, values in drawn.items()}
    print(f"\n{dt.date.today()}, {cpu_name()}, torch {torch.__version__}: reference loop "
          f"{args.epochs} epochs, seed {args.seed}, {minutes:.1f} min; test n = {len(ours)}, "
          f"95% lesion-cluster bootstrap (B = {args.resamples})\n")
    print(f"| metric | {args.experiment} | reference loop | difference (paired) | p |")
    print("|---|---|---|---|---|")
    for name in names:
        cells = [f"{scores[label][name]:.3f} ({intervals[label].at[name, 'ci_low']:.3f}-"
                 f"{intervals[label].at[name, 'ci_high']:.3f})" for label in tables]
        diff = paired_difference(drawn["ours"][name], drawn["reference"][name])
        print(f"| {name} | {cells[0]} | {cells[1]} | {diff['difference']:+.3f} "
              f"({diff['ci_low']:+.3f} to {diff['ci_high']:+.3f}) | {diff['p_value']:.3f} |")


if __name__ == "__main__":
    main()
