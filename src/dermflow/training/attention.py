"""extract_attention: SmoothGrad saliency of the baseline, the C'GAN's conditioning signal.

Captum's NoiseTunnel over Saliency does the work: it expands each batch by the
number of noisy samples into one forward/backward pass, which is what makes
SmoothGrad fast on a GPU. Each map is the channel-max of the averaged absolute
gradients, scaled to [0, 1] per image.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import numpy as np
import pandas as pd
import torch
from captum.attr import NoiseTunnel, Saliency
from tqdm import tqdm

from dermflow.atomic import atomic_memmap, write_csv
from dermflow.data.cache import load_split_cache
from dermflow.data.split import training_pool
from dermflow.figures import plt, save
from dermflow.labels import CLASSES
from dermflow.models.io import load_model
from dermflow.training.batches import ImageTensor, batches
from dermflow.training.precision import autocast

log = logging.getLogger(__name__)


class _Logits(torch.nn.Module):
    """The model under autocast, returning fp32 logits (captum differentiates these)."""

    def __init__(self, model: torch.nn.Module, device: torch.device, precision: str) -> None:
        super().__init__()
        self.model, self.device, self.precision = model, device, precision

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with autocast(self.device, self.precision):
            return self.model(x).float()


def smoothgrad(model: torch.nn.Module, data: ImageTensor, index: np.ndarray, *, samples: int = 25,
               noise: float = 0.15, batch_size: int = 8, precision: str = "bf16",
               seed: int = 0) -> np.ndarray:
    """float16 maps (len(index) x H x W) in [0, 1] for each image's true class.

    ``noise`` is SmoothGrad's noise level: the noise std as a share of the input range.
    """
    model.eval()
    torch.manual_seed(seed)
    tunnel = NoiseTunnel(Saliency(_Logits(model, data.device, precision)))
    stdev = noise * float((1.0 / data.std).mean())  # input range of normalised [0, 1] pixels
    maps = []
    for chunk in tqdm(batches(torch.as_tensor(index), batch_size), desc="smoothgrad",
                      unit="batch", mininterval=5):
        x, y = data.batch(chunk)
        grads = tunnel.attribute(x.requires_grad_(), nt_type="smoothgrad", nt_samples=samples,
                                 nt_samples_batch_size=samples * len(chunk), stdevs=stdev,
                                 target=y, abs=True)
        m = grads.detach().amax(dim=1)
        low = m.amin(dim=(1, 2), keepdim=True)
        high = m.amax(dim=(1, 2), keepdim=True)
        maps.append(((m - low) / (high - low).clamp_min(1e-12)).half().cpu())
    return torch.cat(maps).numpy()


def write_attention(maps: np.ndarray, rows: np.ndarray, n_rows: int,
                    path: str | os.PathLike[str]) -> None:
    """N x H x W float16 file aligned with the image cache; rows outside the pool stay 0."""
    with atomic_memmap(path, np.float16, (n_rows, *maps.shape[1:])) as out:
        out[rows] = maps


def plot_overlays(images: np.ndarray, attention: np.ndarray, index: pd.DataFrame,
                  rows: np.ndarray, out_png: str | os.PathLike[str]) -> None:
    """The paper's Fig. 2: one attention overlay per class (viridis: purple low, yellow high)."""
    pool = index.iloc[rows]
    present = [c for c in CLASSES if (pool["dx"] == c).any()]
    fig, axes = plt.subplots(1, len(present), figsize=(2.2 * len(present), 2.6), squeeze=False)
    for ax, dx in zip(axes[0], present, strict=True):
        row = int(pool.loc[pool["dx"] == dx, "row"].iloc[0])
        ax.imshow(images[row])
        ax.imshow(attention[row].astype(np.float32), cmap="viridis", alpha=0.5, vmin=0, vmax=1)
        ax.set_title(f"{dx}\n{index.at[row, 'image_id']}", fontsize=8)
        ax.axis("off")
    save(fig, out_png)


def extract_attention(model_path: str, cache_npy: str, index_csv: str, split_csv: str, *,
                      protocol: str, settings: dict[str, Any], device: torch.device, seed: int,
                      precision: str, out_npy: str, out_index: str, out_figure: str) -> None:
    """SmoothGrad maps for the training pool, aligned row-for-row with the image cache."""
    images, index = load_split_cache(cache_npy, index_csv, split_csv)
    model, meta = load_model(model_path, device, rule="train_baseline")
    pool = np.flatnonzero(training_pool(index, protocol).to_numpy())
    data = ImageTensor(images, index["label"].to_numpy(), device, meta["mean"], meta["std"])
    log.info("SmoothGrad (%d samples, noise %.2f) for %d training-pool images on %s",
             settings["samples"], settings["noise"], len(pool), device)
    maps = smoothgrad(model, data, pool, samples=settings["samples"], noise=settings["noise"],
                      batch_size=settings["batch_size"], precision=precision, seed=seed)
    write_attention(maps, pool, len(index), out_npy)
    in_pool = np.zeros(len(index), bool)
    in_pool[pool] = True
    write_csv(index[["row", "image_id", "dx", "label"]].assign(in_pool=in_pool), out_index)
    plot_overlays(images, np.load(out_npy, mmap_mode="r"), index, pool, out_figure)
