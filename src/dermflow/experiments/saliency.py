"""Saliency of a trained classifier: Grad-CAM (captum) at the deepest of its candidate layers
whose feature map still has room to localise, and, where the model has one, its own
attention map; the paper's Fig. 11."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from captum.attr import LayerAttribution, LayerGradCam
from matplotlib.cm import ScalarMappable
from torch import nn

from dermflow.figures import plt, save
from dermflow.models.freezing import FreezableClassifier

MIN_SIDE = 4
"""The smallest feature-map side whose Grad-CAM localises: a 1 x 1 map upsampled is one tint
over the whole image, a 2 x 2 one four blurred quadrants (ResNet's last stage at 32 px)."""


@dataclass(frozen=True)
class SaliencyMaps:
    """Maps (N x H x W in [0, 1]) of one kind, and what the figure says about them."""

    source: str  # what the maps are and where in the model they come from
    maps: np.ndarray
    side: tuple[int, int]  # their resolution before upsampling to the image
    scale: str  # what the colour means
    skipped: tuple[tuple[int, int], ...] = ()  # deeper candidates' resolutions, too coarse

    @property
    def coarse(self) -> bool:
        """Too coarse to localise anything (MIN_SIDE)."""
        return min(self.side) < MIN_SIDE


def feature_sides(model: nn.Module, layers: list[nn.Module], x: torch.Tensor,
                  ) -> list[tuple[int, int] | None]:
    """Each layer's output height and width for ``x`` (one forward pass, forward hooks),
    None for a layer whose output is not a feature map (a transformer's tokens)."""
    sides: dict[int, tuple[int, int]] = {}

    def recorder(k: int) -> Callable[[nn.Module, object, object], None]:
        def record(module: nn.Module, inputs: object, output: object) -> None:
            if isinstance(output, torch.Tensor) and output.ndim == 4:
                sides[k] = (int(output.shape[-2]), int(output.shape[-1]))
        return record

    handles = [layer.register_forward_hook(recorder(k)) for k, layer in enumerate(layers)]
    try:
        with torch.no_grad():
            model(x[:1])
    finally:
        for handle in handles:
            handle.remove()
    return [sides.get(k) for k in range(len(layers))]


@dataclass(frozen=True)
class Choice:
    """Grad-CAM's layer, its name in the model, its map's side, and the distinct sides of the
    deeper candidates passed over."""

    layer: nn.Module
    name: str
    side: tuple[int, int]
    skipped: tuple[tuple[int, int], ...]


def choose_layer(model: FreezableClassifier, x: torch.Tensor) -> Choice:
    """Grad-CAM's layer for inputs like ``x``: the deepest of the model's candidates
    (``saliency_layers``, deepest first) whose map is at least MIN_SIDE on each side, else
    the finest of them (the figure then says the maps are too coarse). Decided from the
    shapes the model produces, so it follows the run's image size."""
    layers = model.saliency_layers()
    sides = feature_sides(model, layers, x)
    maps = [(layer, side) for layer, side in zip(layers, sides, strict=True) if side]
    if not maps:
        raise ValueError(f"{type(model).__name__}: no saliency layer gives a feature map")
    at = next((k for k, (_, side) in enumerate(maps) if min(side) >= MIN_SIDE),
              max(range(len(maps)), key=lambda k: min(maps[k][1])))
    layer, side = maps[at]
    name = next(n for n, m in model.named_modules() if m is layer)
    return Choice(layer, name, side, tuple(dict.fromkeys(s for _, s in maps[:at])))


def grad_cam(model: FreezableClassifier, x: torch.Tensor, target: torch.Tensor,
             ) -> SaliencyMaps:
    """Grad-CAM maps of ``target`` classes at ``choose_layer``'s layer (captum), upsampled
    to the image and scaled to each image's peak."""
    choice = choose_layer(model, x)
    cam = LayerGradCam(model, choice.layer)
    maps = cam.attribute(x, target=target, relu_attributions=True)
    maps = LayerAttribution.interpolate(maps, tuple(x.shape[-2:]), "bilinear")[:, 0]
    peak = maps.flatten(1).amax(1).clamp_min(1e-12).view(-1, 1, 1)
    return SaliencyMaps(f"Grad-CAM at {choice.name}", (maps / peak).detach().float().cpu().numpy(),
                        choice.side, "Grad-CAM / the image's peak", choice.skipped)


@torch.no_grad()
def attention_maps(model: FreezableClassifier, x: torch.Tensor) -> SaliencyMaps | None:
    """The model's own attention weights, upsampled to the image, when it has them (paper
    001's hybrid: ``attention_map`` gives N x h x w weights in [0, 1] on its own grid)."""
    method = getattr(model, "attention_map", None)
    weights = method(x) if method is not None else None
    if weights is None:
        return None
    maps = F.interpolate(weights[:, None].float(), size=tuple(x.shape[-2:]), mode="bilinear",
                         align_corners=False)[:, 0]
    return SaliencyMaps("the model's own attention", maps.cpu().numpy(),
                        tuple(weights.shape[-2:]), "attention weight")


def describe(maps: SaliencyMaps, image_size: int) -> str:
    """A row's heading: the maps' source and resolution, the deeper layers passed over, and
    whether they can localise."""
    h, w = maps.side
    text = f"{maps.source}: a {h}×{w} map at {image_size} px"
    if maps.skipped:
        text += f" (deeper layers' maps: {', '.join(f'{a}×{b}' for a, b in maps.skipped)})"
    if maps.coarse:
        cells = "one value for the whole image" if h * w == 1 else \
            f"each cell spans 1/{h} × 1/{w} of the image"
        text += (f"\nmaps too coarse to localise (under {MIN_SIDE}×{MIN_SIDE}): {cells}; "
                 "a larger image_size gives finer maps")
    return text


def plot_saliency(images: np.ndarray, maps: list[SaliencyMaps], rows: pd.DataFrame,
                  classes: list[str], out_png: str | os.PathLike[str]) -> None:
    """The paper's Fig. 11: test images with Grad-CAM (and the model's own attention map,
    paper 001's heatmaps, where it has one), one row per kind of map, each headed by the
    layer it comes from and that layer's resolution, with its colour scale."""
    n = max(1, len(rows))
    fig = plt.figure(figsize=(1.8 * n + 0.9, 2.7 * len(maps)), layout="constrained")
    for sub, found in zip(np.atleast_1d(fig.subfigures(len(maps), 1)), maps, strict=True):
        axes = np.atleast_1d(sub.subplots(1, n))
        for ax, (_, item), cam in zip(axes, rows.iterrows(), found.maps, strict=False):
            ax.imshow(images[int(item["pos"])])
            ax.imshow(cam, cmap="jet", alpha=0.4, vmin=0, vmax=1)
            zero = "\n(zero: no region raises it)" if not cam.any() else ""
            ax.set_title(f"{item['dx']} → {classes[int(item['pred'])]}{zero}", fontsize=8)
        for ax in axes:
            ax.axis("off")
        sub.colorbar(ScalarMappable(plt.Normalize(0, 1), "jet"), ax=list(axes), shrink=0.8,
                     label=found.scale)
        sub.suptitle(describe(found, images.shape[1]), fontsize=9,
                     color="firebrick" if found.coarse else "black")
    save(fig, out_png)
