"""Reading prediction tables (predict's ``predictions.csv``): their classes, probabilities and
the rows of one split in the order every bootstrap refers to."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd


def classes_of(predictions: pd.DataFrame) -> list[str]:
    """The class names of a prediction table (its ``prob_<class>`` columns, in label order):
    the seven diagnoses, or benign/malignant for a binary experiment."""
    return [c.removeprefix("prob_") for c in predictions.columns if c.startswith("prob_")]


def probabilities(predictions: pd.DataFrame) -> np.ndarray:
    return predictions[[f"prob_{c}" for c in classes_of(predictions)]].to_numpy()


def test_rows(predictions_csv: str | os.PathLike[str], split: str = "test") -> pd.DataFrame:
    """An experiment's predictions for a split, in image-id order (resamples refer to it)."""
    table = pd.read_csv(predictions_csv)
    return table[table["split"] == split].sort_values("image_id").reset_index(drop=True)
