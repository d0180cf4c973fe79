"""Figures shared by several stages (written atomically, Agg backend, no display needed)."""

from __future__ import annotations

import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from dermflow.atomic import atomic_path  # noqa: E402


def save(fig: plt.Figure, path: str | os.PathLike[str], dpi: int = 120) -> None:
    """Save a figure atomically, format from the suffix, and free it."""
    suffix = os.path.splitext(str(path))[1].lstrip(".") or "png"
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, format=suffix, bbox_inches="tight")
    plt.close(fig)


def plot_history(history: pd.DataFrame, best_epoch: int, title: str,
                 path: str | os.PathLike[str]) -> None:
    """Training loss and validation metrics per epoch, best epoch marked."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.2))
    left.plot(history["epoch"], history["train_loss"], marker="o")
    left.set(xlabel="epoch", ylabel="training loss", title=title)
    for column in ("val_macro_f1", "val_balanced_accuracy", "val_accuracy"):
        right.plot(history["epoch"], history[column], marker="o", label=column[4:])
    right.axvline(best_epoch, color="grey", linestyle="--", label=f"best epoch {best_epoch}")
    right.set(xlabel="epoch", ylabel="validation", ylim=(0, 1))
    right.legend(fontsize=8)
    save(fig, path)
