"""Grad-CAM's layer follows the run's image size: the deepest one whose map can still localise,
or a figure that says the maps are too coarse."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from dermflow.experiments import saliency
from dermflow.labels import CLASSES
from dermflow.models import factory
from dermflow.models.freezing import FreezableClassifier, stages


class Strided(FreezableClassifier):
    """Two candidate layers, 1/8 and 1/16 of the input."""

    def __init__(self) -> None:
        super().__init__()
        self.backbones, self.num_classes = nn.ModuleList(), 2
        self.early, self.late = nn.Conv2d(3, 4, 8, stride=8), nn.Conv2d(4, 4, 2, stride=2)
        self.head = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.late(self.early(x)).mean(dim=(2, 3)))

    def saliency_layers(self) -> list[nn.Module]:
        return [self.late, self.early]


@pytest.fixture
def figures(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    saved: list[object] = []
    monkeypatch.setattr(saliency, "save", lambda fig, path: saved.append(fig))
    return saved


def test_resnet_at_32_px_takes_the_deepest_stage_with_a_4x4_map():
    torch.manual_seed(0)
    model = factory.create("resnet18", num_classes=len(CLASSES), image_size=32,
                           settings={"pretrained": False}, weights_dir=None).eval()
    x = torch.rand(2, 3, 32, 32)
    choice = saliency.choose_layer(model, x)
    assert choice.layer is stages(model.backbones[0])[1]  # the last stage is 1 x 1 at 32 px
    assert choice.side == (4, 4) and min(choice.side) >= saliency.MIN_SIDE
    assert choice.skipped == ((1, 1), (2, 2))
    maps = saliency.grad_cam(model, x, torch.tensor([0, 1]))
    assert maps.source == "Grad-CAM at backbones.0.layer2" and not maps.coarse
    assert (maps.maps.reshape(2, -1).std(1) > 0).all()  # it localises: not one tint


def test_maps_too_coarse_everywhere_are_said_to_be_so_on_the_figure(figures):
    model = Strided().eval()
    small, large = torch.rand(2, 3, 32, 32), torch.rand(2, 3, 64, 64)
    assert saliency.choose_layer(model, large).layer is model.late  # 4 x 4 at 64 px
    maps = saliency.grad_cam(model, small, torch.tensor([0, 1]))
    assert maps.source == "Grad-CAM at early" and maps.side == (4, 4)  # the finest at 32 px
    model.early.stride = (16, 16)  # now 2 x 2 and 1 x 1: nothing localises
    maps = saliency.grad_cam(model, small, torch.tensor([0, 1]))
    assert maps.coarse and maps.side == (2, 2) and maps.maps.shape == (2, 32, 32)
    rows = pd.DataFrame({"pos": [0, 1], "dx": ["nv", "mel"], "pred": [0, 1]})
    saliency.plot_saliency(np.zeros((2, 32, 32, 3), np.uint8), [maps], rows, ["benign",
                                                                              "malignant"], "s.png")
    [fig] = figures
    [row] = fig.subfigs
    heading = row._suptitle.get_text()
    assert "Grad-CAM at early: a 2×2 map at 32 px" in heading and "too coarse" in heading
    assert any(ax.get_ylabel() == "Grad-CAM / the image's peak" for ax in fig.axes)  # colourbar
