"""Saliency of a trained classifier: Grad-CAM at its saliency layer (captum) and, where the
model has one, its own attention map; the paper's Fig. 11."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import torch
from captum.attr import LayerAttribution, LayerGradCam

from dermflow.figures import plt, save
from dermflow.models.freezing import FreezableClassifier


def grad_cam(model: FreezableClassifier, x: torch.Tensor, target: torch.Tensor,
             ) -> np.ndarray:
    """Grad-CAM maps (N x H x W, scaled to [0, 1]) of ``target`` classes at the model's
    saliency layer (captum)."""
    cam = LayerGradCam(model, model.saliency_layer())
    maps = cam.attribute(x, target=target, relu_attributions=True)
    maps = LayerAttribution.interpolate(maps, tuple(x.shape[-2:]), "bilinear")[:, 0]
    peak = maps.flatten(1).amax(1).clamp_min(1e-12).view(-1, 1, 1)
    return (maps / peak).detach().float().cpu().numpy()


@torch.no_grad()
def attention_maps(model: FreezableClassifier, x: torch.Tensor) -> np.ndarray | None:
    """The model's own attention (N x H x W in [0, 1]) when it has one (paper 001's hybrid)."""
    method = getattr(model, "attention_map", None)
    maps = method(x) if method is not None else None
    return None if maps is None else maps.float().cpu().numpy()


def plot_saliency(images: np.ndarray, maps: dict[str, np.ndarray], rows: pd.DataFrame,
                  classes: list[str], out_png: str | os.PathLike[str]) -> None:
    """The paper's Fig. 11: test images with Grad-CAM (and the model's own attention map,
    paper 001's heatmaps, where it has one), one row per kind of map."""
    n = max(1, len(rows))
    fig, axes = plt.subplots(len(maps), n, figsize=(2.0 * n, 2.6 * len(maps)), squeeze=False)
    for axes_row, (kind, heat) in zip(axes, maps.items(), strict=True):
        for ax, (_, item), cam in zip(axes_row, rows.iterrows(), heat, strict=False):
            ax.imshow(images[int(item["pos"])])
            ax.imshow(cam, cmap="jet", alpha=0.4, vmin=0, vmax=1)
            ax.set_title(f"{item['dx']} → {classes[int(item['pred'])]}", fontsize=8)
        for ax in axes_row:
            ax.axis("off")
        axes_row[0].text(-0.1, 0.5, kind, transform=axes_row[0].transAxes, rotation=90,
                         ha="right", va="center", fontsize=9)
    save(fig, out_png)
