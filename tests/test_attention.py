"""SmoothGrad maps: shape, range, and attention where the model actually looks."""

from __future__ import annotations

import numpy as np
import torch

from dermflow.training.attention import smoothgrad, write_attention
from dermflow.training.batches import ImageTensor


class CentreModel(torch.nn.Module):
    """Logits depend only on the centre 4x4 pixels."""

    def __init__(self) -> None:
        super().__init__()
        self.head = torch.nn.Linear(3 * 16, 7)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x[:, :, 6:10, 6:10].flatten(1) ** 2)


def test_maps_are_scaled_float16_and_look_at_the_centre(tmp_path):
    rng = np.random.default_rng(0)
    data = ImageTensor(rng.integers(0, 256, (5, 16, 16, 3), dtype=np.uint8), np.arange(5),
                       torch.device("cpu"), (0.5,) * 3, (0.5,) * 3)
    torch.manual_seed(0)
    maps = smoothgrad(CentreModel(), data, np.array([0, 2, 4]), samples=6, batch_size=2)
    assert maps.shape == (3, 16, 16) and maps.dtype == np.float16
    assert maps.min() >= 0 and np.allclose(maps.reshape(3, -1).max(1), 1)
    centre = np.zeros((16, 16), bool)
    centre[6:10, 6:10] = True
    assert (maps[:, ~centre] == 0).all() and (maps[:, centre].mean() > 0.1)

    write_attention(maps, np.array([0, 2, 4]), 5, tmp_path / "a.npy")
    full = np.load(tmp_path / "a.npy", mmap_mode="r")
    assert full.shape == (5, 16, 16)
    assert (full[[1, 3]] == 0).all() and np.array_equal(full[2], maps[1])
