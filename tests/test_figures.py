"""The training-curve figure: whole-epoch ticks, validation loss beside training loss, the
experiment in the title (read from the matplotlib objects, not the pixels)."""

from __future__ import annotations

import pandas as pd
import pytest

from dermflow import figures


def test_training_curve_has_whole_epochs_both_losses_and_the_experiments_name(tmp_path,
                                                                              monkeypatch):
    drawn = []
    monkeypatch.setattr(figures, "save", lambda fig, path: drawn.append(fig))
    history = pd.DataFrame({"epoch": [1, 2, 3], "train_loss": [1.8, 1.2, 0.9],
                            "val_loss": [1.9, 1.5, 1.4], "val_macro_f1": [0.2, 0.5, 0.6],
                            "val_balanced_accuracy": [0.3, 0.5, 0.7],
                            "val_accuracy": [0.4, 0.6, 0.8]})
    figures.plot_history(history, 3, "strong_baseline (resnetv2_50)", tmp_path / "curve.png")
    (fig,) = drawn
    fig.canvas.draw()
    assert fig.get_suptitle() == "strong_baseline (resnetv2_50)"
    loss = fig.axes[0]
    lines = {line.get_label(): list(line.get_ydata()) for line in loss.get_lines()}
    assert lines["training"] == [1.8, 1.2, 0.9] and lines["validation"] == [1.9, 1.5, 1.4]
    for ax in fig.axes:
        ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
        assert ticks and all(t == pytest.approx(round(t)) for t in ticks), ticks
