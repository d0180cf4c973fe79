"""HAM10000 diagnosis classes, in the source paper's label order (Table 2), and the tasks.

``multiclass`` is the seven diagnoses. ``binary`` (paper 004's task) is benign vs
malignant, malignant being melanoma, basal cell carcinoma and actinic keratosis /
intraepithelial carcinoma (akiec), the three HAM10000 classes that are cancers or
precancers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

CLASSES: tuple[str, ...] = ("bkl", "nv", "df", "mel", "vasc", "bcc", "akiec")
CLASS_INDEX: dict[str, int] = {name: i for i, name in enumerate(CLASSES)}
TASKS = ("multiclass", "binary")
MALIGNANT: tuple[str, ...] = ("mel", "bcc", "akiec")
BINARY: tuple[str, ...] = ("benign", "malignant")


def task_classes(task: str) -> tuple[str, ...]:
    """The class names a task's classifier predicts, in label order."""
    if task == "multiclass":
        return CLASSES
    if task == "binary":
        return BINARY
    raise ValueError(f"task: unknown value {task!r}; one of {', '.join(TASKS)}")


def task_labels(dx: np.ndarray, task: str) -> np.ndarray:
    """Integer labels of diagnoses ``dx`` under ``task``."""
    dx = np.asarray(dx)
    if task == "binary":
        return np.isin(dx, MALIGNANT).astype(np.int64)
    task_classes(task)
    return np.array([CLASS_INDEX[d] for d in dx], np.int64)


def labels_by_position(table: pd.DataFrame, n: int, task: str) -> np.ndarray:
    """The task's labels aligned with the combined image array (unused positions get 0)."""
    labels = np.zeros(n, np.int64)
    labels[table["pos"].to_numpy()] = task_labels(table["dx"].to_numpy(), task)
    return labels


def positions(table: pd.DataFrame, split: str) -> np.ndarray:
    """Where a dataset table's images of ``split`` lie in the combined image array."""
    return table.loc[table["split"] == split, "pos"].to_numpy()
