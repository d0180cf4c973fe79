"""The evaluation figures say what they show: experiment and set in the title, each class's AUC
or AP in the legend, each confusion cell's share and count."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from dermflow.evaluation import evaluate as evaluate_module
from dermflow.labels import CLASSES


def rows(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % len(CLASSES)
    probs = rng.dirichlet(np.ones(len(CLASSES)), n)
    probs[np.arange(n), labels] += rng.uniform(0, 1, n)
    probs /= probs.sum(1, keepdims=True)
    return pd.DataFrame({"label": labels, **{f"prob_{c}": probs[:, k]
                                             for k, c in enumerate(CLASSES)}})


@pytest.fixture
def figures(monkeypatch: pytest.MonkeyPatch) -> dict[str, object]:
    """The figures the plotting functions would save, by file name, left open to inspect."""
    saved: dict[str, object] = {}
    monkeypatch.setattr(evaluate_module, "save", lambda fig, path: saved.__setitem__(path, fig))
    return saved


def test_curves_name_the_experiment_and_set_and_give_each_class_its_score(figures):
    sets = {"test": rows(70, 0), "external": rows(35, 1)}
    evaluate_module.plot_curves(sets, "cgan_resnet50v2_deit", "roc.png", "pr.png")
    for path, score in (("roc.png", roc_auc_score), ("pr.png", average_precision_score)):
        fig = figures[path]
        assert "cgan_resnet50v2_deit" in fig.get_suptitle()
        axes = [ax for ax in fig.axes if ax.get_legend()]
        assert [ax.get_title() for ax in axes] == ["test set, 70 images",
                                                   "external set, 35 images"]
        for ax, table in zip(axes, sets.values(), strict=True):
            texts = [t.get_text() for t in ax.get_legend().get_texts()]
            probs = table[[f"prob_{c}" for c in CLASSES]].to_numpy()
            for k, dx in enumerate(CLASSES):
                value = score(table["label"] == k, probs[:, k])
                assert f"{dx}: {value:.3f} (n={(table['label'] == k).sum()})" in texts


def test_confusion_cells_show_share_and_count_under_the_experiments_name(figures):
    table = rows(70, 0)
    evaluate_module.plot_confusion({"test": table}, "strong_baseline", "confusion.png")
    fig = figures["confusion.png"]
    assert "strong_baseline" in fig.get_suptitle()
    ax = fig.axes[0]
    assert ax.get_title() == "test set, 70 images"
    probs = table[[f"prob_{c}" for c in CLASSES]].to_numpy()
    counts = pd.crosstab(table["label"], probs.argmax(1)).reindex(
        index=range(len(CLASSES)), columns=range(len(CLASSES)), fill_value=0).to_numpy()
    cells = [t.get_text() for t in ax.texts]
    assert len(cells) == len(CLASSES) ** 2
    for (i, j), count in np.ndenumerate(counts):
        assert cells[i * len(CLASSES) + j] == f"{count / counts[i].sum():.2f}\n{count}"
