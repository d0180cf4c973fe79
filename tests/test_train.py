"""The shared training loop: it learns, selects on val, and resumes to the same weights."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from stage_configs import train_config

from dermflow.training import loop as train
from dermflow.training.batches import ImageTensor
from dermflow.training.loop import fit, predict

CPU = torch.device("cpu")


def colour_classes(n: int = 140, size: int = 16, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Images whose class is their dominant colour channel and brightness: easy to learn."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 7
    images = rng.integers(0, 60, (n, size, size, 3)).astype(np.uint8)
    for i, label in enumerate(labels):
        images[i, ..., label % 3] += np.uint8(80 + 40 * (label // 3))
    return images, labels


class TinyNet(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.num_classes = 7
        self.body = torch.nn.Sequential(
            torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Dropout(0.2),
            torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(8, 7))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def setup(seed: int = 0):
    images, labels = colour_classes()
    data = ImageTensor(images, labels, CPU, (0.5,) * 3, (0.5,) * 3)
    torch.manual_seed(seed)
    return TinyNet(), data, np.arange(0, 98), np.arange(98, 140)


CFG = train_config(epochs=4, batch_size=16, lr=1e-2, augment=True, seed=3)
# every recipe option on (dermflow.training: schedules, sampling, ema)
RECIPE = train_config(epochs=4, batch_size=16, lr=1e-2, augment=True, seed=3, optimizer="adamw",
                     weight_decay=0.05, lr_schedule="onecycle", lr_warmup_epochs=1.5,
                     label_smoothing=0.1, sampling="balanced", sampling_power=0.5, ema=0.9,
                     class_weights=True, epoch_images=130)


def test_training_learns_and_records_history():
    model, data, tr, va = setup()
    result = fit(model, data, tr, va, CFG)
    assert list(result.history["epoch"]) == [1, 2, 3, 4]
    best = result.history["val_macro_f1"].max()
    assert result.history.at[result.best_epoch - 1, "val_macro_f1"] == best
    model.load_state_dict(result.state)
    accuracy = (predict(model, data, va, 32).argmax(1) == data.labels[va].numpy()).mean()
    assert accuracy > 0.5  # chance is 1/7


@pytest.mark.parametrize("cfg", [CFG, RECIPE], ids=["plain", "every-recipe-option"])
def test_killed_run_resumes_to_identical_weights(tmp_path, monkeypatch, cfg):
    model, data, tr, va = setup()
    reference = fit(model, data, tr, va, cfg)

    calls = {"n": 0}
    real_scores = train.scores

    def dying_scores(*args):
        calls["n"] += 1
        if calls["n"] == 3:  # during epoch 3, after two checkpoints
            raise KeyboardInterrupt
        return real_scores(*args)

    checkpoint = tmp_path / "last.pt"
    model, data, tr, va = setup()
    monkeypatch.setattr(train, "scores", dying_scores)
    with pytest.raises(KeyboardInterrupt):
        fit(model, data, tr, va, cfg, checkpoint=checkpoint)
    assert torch.load(checkpoint, weights_only=True)["epoch"] == 2
    monkeypatch.setattr(train, "scores", real_scores)
    model, data, tr, va = setup(seed=99)  # a different init: everything must come from the file
    resumed = fit(model, data, tr, va, cfg, checkpoint=checkpoint)
    assert list(resumed.history["epoch"]) == [1, 2, 3, 4]
    assert list(resumed.history["lr"]) == list(reference.history["lr"])
    for key, value in reference.state.items():
        torch.testing.assert_close(resumed.state[key], value, rtol=0, atol=0)


def test_checkpoint_of_another_config_is_ignored(tmp_path):
    model, data, tr, va = setup()
    checkpoint = tmp_path / "last.pt"
    fit(model, data, tr, va, train_config(epochs=2, batch_size=16, lr=1e-2, seed=3),
        checkpoint=checkpoint)
    model, data, tr, va = setup()
    result = fit(model, data, tr, va, CFG, checkpoint=checkpoint)
    assert len(result.history) == 4


def test_early_stopping_stops():
    model, data, tr, va = setup()
    cfg = train_config(epochs=30, batch_size=16, lr=0.0, patience=2, seed=3)  # lr 0: no progress
    result = fit(model, data, tr, va, cfg)
    assert len(result.history) == 3


def test_the_kept_epoch_follows_select():
    """classifier.select: macro-F1 by default; a loss column is minimised; the stage
    comparison reads it."""
    model, data, tr, va = setup()
    by_f1 = fit(model, data, tr, va, CFG)
    assert by_f1.select == "val_macro_f1"
    assert by_f1.best_score == by_f1.history["val_macro_f1"].max()
    model, data, tr, va = setup()
    by_loss = fit(model, data, tr, va, replace(CFG, select="val_loss"))
    assert by_loss.best_epoch == by_loss.history["val_loss"].idxmin() + 1
    assert by_loss.best_score == by_loss.history["val_loss"].min()
    worse = replace(by_loss, best_score=by_loss.best_score + 1)
    assert by_loss.improves_on(worse) and not worse.improves_on(by_loss)
    assert not by_loss.improves_on(by_loss)  # a tie keeps the earlier stage


def test_checkpoint_selected_by_another_column_is_ignored(tmp_path, caplog):
    model, data, tr, va = setup()
    checkpoint = tmp_path / "last.pt"
    fit(model, data, tr, va, replace(CFG, select="val_loss"), checkpoint=checkpoint)
    model, data, tr, va = setup()
    reference = fit(model, data, tr, va, CFG)
    model, data, tr, va = setup()
    with caplog.at_level("INFO", logger="dermflow.training.loop"):
        result = fit(model, data, tr, va, CFG, checkpoint=checkpoint)
    assert "it belongs to another configuration" in caplog.text
    assert result.best_epoch == reference.best_epoch
    for key, value in reference.state.items():
        assert torch.equal(result.state[key], value)
