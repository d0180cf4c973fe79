"""Figures shared by several stages (written atomically, Agg backend, no display needed)."""

from __future__ import annotations

import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from dermflow.atomic import atomic_path  # noqa: E402


def save(fig: plt.Figure, path: str | os.PathLike[str], dpi: int = 120) -> None:
    """Save a figure atomically, format from the suffix, and free it."""
    suffix = os.path.splitext(str(path))[1].lstrip(".") or "png"
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, format=suffix, bbox_inches="tight")
    plt.close(fig)


def epoch_axis(ax: Axes) -> None:
    """Whole epochs on the x axis: a short run's default ticks fall between epochs (1.5)."""
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def plot_history(history: pd.DataFrame, best_epoch: int, title: str,
                 path: str | os.PathLike[str]) -> None:
    """Training and validation loss, and validation metrics, per epoch; best epoch marked.

    The training loss is the batches' (augmented, label-smoothed when the recipe smooths)
    and the validation loss the plain cross-entropy of the model kept, so a gap between
    them is partly the recipe's, not only overfitting.
    """
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.4), layout="constrained")
    left.plot(history["epoch"], history["train_loss"], marker="o", label="training")
    left.plot(history["epoch"], history["val_loss"], marker="o", label="validation")
    left.set(ylabel="loss")
    left.legend(fontsize=8)
    for column in ("val_macro_f1", "val_balanced_accuracy", "val_accuracy"):
        right.plot(history["epoch"], history[column], marker="o", label=column[4:])
    right.set(ylabel="validation", ylim=(0, 1))
    for ax in (left, right):
        epoch_axis(ax)
        ax.axvline(best_epoch, color="grey", linestyle="--",
                   label=f"best epoch {best_epoch}" if ax is right else None)
    right.legend(fontsize=8)
    fig.suptitle(title)
    save(fig, path)
