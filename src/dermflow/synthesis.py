"""generate_synthetic: class-balancing images from the trained C'GAN.

How many per class follows the paper's Table 2: each class is topped up to a
target total (bkl 3600, nv 6800, df 2500, mel 3600, vasc 2500, bcc 2500, akiec
2500 for HAM10000's 10,015 images). The targets are scaled to the pool the GAN
learnt from (``grouped``: the train split, so about 70% of them), and explicit
per-class counts replace them when given. Every synthetic image is reproducible
on its own: its manifest row holds its class, its source real image and the seed
of its latent vector; sources are used round-robin so each real image of a class
seeds about as many synthetic images as any other.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from dermflow.atomic import atomic_path, write_csv
from dermflow.baseline import load_split_cache
from dermflow.batches import ImageTensor, batches
from dermflow.errors import DatasetError
from dermflow.figures import plt, save
from dermflow.gan_training import (
    TO_UNIT,
    attention_tensor,
    gather_attention,
    load_generator,
)
from dermflow.labels import CLASSES
from dermflow.split import training_pool
from dermflow.train import autocast

log = logging.getLogger(__name__)

MANIFEST_COLUMNS = ("synthetic_id", "row", "dx", "label", "source_image_id", "source_row",
                    "lesion_id", "seed")


def synthetic_counts(pool_counts: dict[str, int], settings: dict[str, Any]) -> dict[str, int]:
    """Synthetic images per class: explicit counts, else targets scaled to the pool."""
    if settings.get("counts"):
        return {dx: int(settings["counts"].get(dx, 0)) for dx in CLASSES}
    scale = sum(pool_counts.values()) / settings["reference_images"]
    return {dx: max(0, round(settings["targets"][dx] * scale) - pool_counts.get(dx, 0))
            for dx in CLASSES}


def plan(pool: pd.DataFrame, counts: dict[str, int], seed: int) -> pd.DataFrame:
    """The manifest: one row per synthetic image with its class, source and latent seed."""
    rng = np.random.default_rng([seed, 1])
    parts = []
    for dx in CLASSES:
        n = counts[dx]
        if n == 0:
            continue
        sources = pool[pool["dx"] == dx]
        if sources.empty:
            raise DatasetError(f"synthesis: {n} {dx} image(s) asked for, but the training pool "
                               f"has no {dx} image to condition on")
        rounds = -(-n // len(sources))
        order = np.concatenate([rng.permutation(len(sources)) for _ in range(rounds)])[:n]
        parts.append(sources.iloc[order])
    if not parts:
        return pd.DataFrame(columns=list(MANIFEST_COLUMNS))
    chosen = pd.concat(parts, ignore_index=True)
    seeds = np.random.SeedSequence(seed).generate_state(len(chosen), dtype=np.uint32)
    return pd.DataFrame({
        "synthetic_id": [f"SYN_{i:07d}" for i in range(len(chosen))],
        "row": np.arange(len(chosen)),
        "dx": chosen["dx"].to_numpy(),
        "label": chosen["label"].to_numpy(),
        "source_image_id": chosen["image_id"].to_numpy(),
        "source_row": chosen["row"].to_numpy(),
        "lesion_id": chosen["lesion_id"].to_numpy(),
        "seed": seeds.astype(np.int64),
    })


def latents(seeds: np.ndarray, latent_dim: int) -> torch.Tensor:
    """One standard-normal latent vector per seed, each from its own generator."""
    return torch.stack([torch.randn(latent_dim, generator=torch.Generator().manual_seed(int(s)))
                        for s in seeds])


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """N x 3 x S x S in [-1, 1] → N x S x S x 3 uint8."""
    return ((x.float() + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).permute(
        0, 2, 3, 1).cpu().numpy()


@torch.no_grad()
def synthesize(generator: torch.nn.Module, data: ImageTensor, attention: torch.Tensor,
               rows: np.ndarray, seeds: np.ndarray, precision: str = "fp32") -> torch.Tensor:
    """Synthetic images (N x 3 x S x S in [-1, 1]) for source cache rows and latent seeds."""
    rows_t = torch.as_tensor(rows)
    x, y = data.batch(rows_t)
    z = latents(seeds, generator.latent_dim).to(data.device)
    with autocast(data.device, precision):
        return generator(x, gather_attention(attention, rows_t, data.device), z, y).float()


def plot_examples(images: np.ndarray, attention: np.ndarray, synthetic: np.ndarray,
                  manifest: pd.DataFrame, out_png: str) -> None:
    """The paper's Fig. 4: real image, its attention map and a synthetic image, per class."""
    present = [dx for dx in CLASSES if (manifest["dx"] == dx).any()]
    fig, axes = plt.subplots(3, max(1, len(present)), figsize=(2.2 * max(1, len(present)), 7),
                             squeeze=False)
    for col, dx in enumerate(present):
        item = manifest[manifest["dx"] == dx].iloc[0]
        source = int(item["source_row"])
        axes[0, col].imshow(images[source])
        axes[0, col].set_title(f"{dx}\n{item['source_image_id']}", fontsize=8)
        axes[1, col].imshow(attention[source].astype(np.float32), cmap="viridis", vmin=0, vmax=1)
        axes[2, col].imshow(synthetic[int(item["row"])])
        axes[2, col].set_title(item["synthetic_id"], fontsize=8)
    for ax, label in zip(axes[:, 0], ("real", "attention", "synthetic"), strict=True):
        ax.set_ylabel(label)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    save(fig, out_png)


def generate_synthetic(generator_path: str, cache_npy: str, index_csv: str, split_csv: str,
                       attention_npy: str, *, protocol: str, settings: dict[str, Any],
                       device: torch.device, seed: int, precision: str, out_npy: str,
                       out_manifest: str, out_figure: str) -> pd.DataFrame:
    """Generate the configured counts; write the uint8 images, the manifest and Fig. 4."""
    images, index = load_split_cache(cache_npy, index_csv, split_csv)
    maps = np.load(attention_npy, mmap_mode="r")
    generator, meta = load_generator(generator_path, device)
    if meta["image_size"] != images.shape[1]:
        raise DatasetError(f"{generator_path} makes {meta['image_size']}px images but the cache "
                           f"holds {images.shape[1]}px ones; re-run train_gan")
    pool = index[training_pool(index, protocol).to_numpy()]
    counts = synthetic_counts(pool["dx"].value_counts().to_dict(), settings)
    manifest = plan(pool, counts, seed)
    log.info("generating %d synthetic images on %s: %s", len(manifest), device, counts)
    data = ImageTensor(images, index["label"].to_numpy(), device, *TO_UNIT)
    attention = attention_tensor(maps, device, data.resident)
    size = images.shape[1]
    with atomic_path(out_npy) as tmp:
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8,
                                        shape=(len(manifest), size, size, 3))
        for chunk in tqdm(batches(torch.arange(len(manifest)), settings["batch_size"]),
                          desc="synthesize", unit="batch", mininterval=5):
            part = manifest.iloc[chunk.numpy()]
            fake = synthesize(generator, data, attention, part["source_row"].to_numpy(),
                              part["seed"].to_numpy(), precision)
            out[chunk.numpy()] = to_uint8(fake)
        out.flush()
        del out
    write_csv(manifest, out_manifest)
    plot_examples(images, maps, np.load(out_npy, mmap_mode="r"), manifest, out_figure)
    return manifest
