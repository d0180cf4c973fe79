"""generate_synthetic: class-balancing images from the trained generator (``gan.kind``).

The manifest (dermflow.gan.plan) says how many images of each class to make and from
which source images; kinds that do not edit a source (the DCGAN) have source_row -1,
and their samples are resized to the cache's size. With ``synthesis.select`` on,
each class is over-generated and the kept images are chosen by the critic's realism
and their diversity (dermflow.gan.selection); the manifest then records each image's
realism score.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from dermflow.atomic import atomic_memmap, write_csv
from dermflow.data.cache import load_split_cache, read_array
from dermflow.data.split import training_pool
from dermflow.errors import DatasetError
from dermflow.figures import plt, save
from dermflow.gan.networks import attention_tensor, gather_attention, load_networks
from dermflow.gan.plan import numbered, plan, synthetic_counts
from dermflow.gan.registry import generator_kind
from dermflow.gan.selection import candidate_counts, select_diverse
from dermflow.gan.step import TO_UNIT, resize
from dermflow.labels import CLASSES
from dermflow.training.batches import ImageTensor, batches
from dermflow.training.precision import autocast

log = logging.getLogger(__name__)


def latents(seeds: np.ndarray, latent_dim: int) -> torch.Tensor:
    """One standard-normal latent vector per seed, each from its own generator."""
    return torch.stack([torch.randn(latent_dim, generator=torch.Generator().manual_seed(int(s)))
                        for s in seeds])


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """N x 3 x S x S in [-1, 1] → N x S x S x 3 uint8."""
    return ((x.float() + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).permute(
        0, 2, 3, 1).cpu().numpy()


def conditions(data: ImageTensor, attention: torch.Tensor | None, part: pd.DataFrame,
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Manifest rows' classes, source cache rows, and their attention maps (C'GAN only)."""
    y = torch.tensor(part["label"].to_numpy(), device=data.device)
    rows = torch.tensor(part["source_row"].to_numpy())
    return y, rows, (gather_attention(attention, rows, data.device) if attention is not None
                     else None)


@torch.no_grad()
def synthesize(generator: torch.nn.Module, data: ImageTensor, attention: torch.Tensor | None,
               part: pd.DataFrame, precision: str = "fp32") -> torch.Tensor:
    """Synthetic images (N x 3 x S x S in [-1, 1], S the cache's) for manifest rows: from
    their source images and attention (C'GAN), or from their class alone (DCGAN)."""
    z = latents(part["seed"].to_numpy(), generator.latent_dim).to(data.device)
    y, rows, maps = conditions(data, attention, part)
    with autocast(data.device, precision):
        if maps is None:
            return resize(generator(z, y).float(), int(data.images.shape[1]))
        return generator(data.batch(rows)[0], maps, z, y).float()


@torch.no_grad()
def score(critic: torch.nn.Module, fake: torch.Tensor, data: ImageTensor,
          attention: torch.Tensor | None, part: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """The critic's realism score and pooled features of synthetic images."""
    y, _, maps = conditions(data, attention, part)
    realism, features = critic.score(fake, y) if maps is None else critic.score(fake, maps, y)
    return realism.cpu().numpy(), features.cpu().numpy()


def select_candidates(generator: torch.nn.Module, critic: torch.nn.Module, data: ImageTensor,
                      attention: torch.Tensor | None, candidates: pd.DataFrame,
                      counts: dict[str, int], *, diversity: float, batch_size: int,
                      precision: str) -> pd.DataFrame:
    """The kept candidates (dermflow.gan.selection), with their realism scores. Candidates are
    scored batch by batch and not stored: the kept ones are made again from their seeds,
    which costs a second generation pass but no memory for twice the images."""
    realism, features = [], []
    for chunk in tqdm(batches(torch.arange(len(candidates)), batch_size), desc="score",
                      unit="batch", mininterval=5):
        part = candidates.iloc[chunk.numpy()]
        r, f = score(critic, synthesize(generator, data, attention, part, precision), data,
                     attention, part)
        realism.append(r)
        features.append(f)
    scored = candidates.assign(realism=np.concatenate(realism) if realism else [])
    stacked = np.concatenate(features) if features else np.zeros((0, 1))
    kept = []
    for dx in CLASSES:
        where = np.flatnonzero((scored["dx"] == dx).to_numpy())
        if len(where) and counts[dx]:
            pick = select_diverse(scored["realism"].to_numpy()[where], stacked[where],
                                  counts[dx], diversity)
            kept.append(scored.iloc[where[pick]])
    return numbered(pd.concat(kept) if kept else scored.iloc[:0])


def plot_examples(images: np.ndarray, attention: np.ndarray | None, synthetic: np.ndarray,
                  manifest: pd.DataFrame, pool: pd.DataFrame, out_png: str) -> None:
    """The paper's Fig. 4: a real image (the source, when the generator has one), its
    attention map (C'GAN) and a synthetic image, per class."""
    present = [dx for dx in CLASSES if (manifest["dx"] == dx).any()]
    labels = ["real", *(["attention"] if attention is not None else []), "synthetic"]
    fig, axes = plt.subplots(len(labels), max(1, len(present)),
                             figsize=(2.2 * max(1, len(present)), 2.4 * len(labels)),
                             squeeze=False)
    for col, dx in enumerate(present):
        item = manifest[manifest["dx"] == dx].iloc[0]
        has_source = int(item["source_row"]) >= 0
        real = pool[pool["dx"] == dx].iloc[0]
        source = int(item["source_row"]) if has_source else int(real["row"])
        axes[0, col].imshow(images[source])
        shown = item["source_image_id"] if has_source else real["image_id"]
        axes[0, col].set_title(f"{dx}\n{shown}", fontsize=8)
        if attention is not None:
            axes[1, col].imshow(attention[source].astype(np.float32), cmap="viridis", vmin=0,
                                vmax=1)
        axes[-1, col].imshow(synthetic[int(item["row"])])
        axes[-1, col].set_title(item["synthetic_id"], fontsize=8)
    for ax, label in zip(axes[:, 0], labels, strict=True):
        ax.set_ylabel(label)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    save(fig, out_png)


def generate_synthetic(generator_path: str, cache_npy: str, index_csv: str, split_csv: str,
                       attention_npy: str | None, *, protocol: str, settings: dict[str, Any],
                       device: torch.device, seed: int, precision: str, out_npy: str,
                       out_manifest: str, out_figure: str) -> pd.DataFrame:
    """Generate the configured counts (selected from candidates when synthesis.select is on);
    write the uint8 images, the manifest and Fig. 4."""
    images, index = load_split_cache(cache_npy, index_csv, split_csv)
    generator, critic, meta = load_networks(generator_path, device)
    if meta["image_size"] != images.shape[1]:
        raise DatasetError(f"{generator_path} makes {meta['image_size']}px images but the cache "
                           f"holds {images.shape[1]}px ones; re-run train_gan")
    conditional = generator_kind(meta["kind"]).needs_attention
    if conditional and attention_npy is None:
        raise ValueError(f"gan.kind {meta['kind']} needs the attention maps")
    maps = read_array(attention_npy, rule="extract_attention") if conditional else None
    pool = index[training_pool(index, protocol).to_numpy()]
    counts = synthetic_counts(pool["dx"].value_counts().to_dict(), settings)
    data = ImageTensor(images, index["label"].to_numpy(), device, *TO_UNIT)
    attention = attention_tensor(maps, device, data.resident) if maps is not None else None
    select = settings["select"]
    if select["enabled"]:
        candidates = plan(pool, candidate_counts(counts, select["candidates"]), seed,
                          with_sources=conditional)
        log.info("scoring %d candidates with the %s's critic", len(candidates), meta["kind"])
        manifest = select_candidates(generator, critic, data, attention, candidates, counts,
                                     diversity=select["diversity"],
                                     batch_size=settings["batch_size"], precision=precision)
    else:
        manifest = plan(pool, counts, seed, with_sources=conditional)
    log.info("generating %d synthetic images with the %s on %s: %s", len(manifest),
             meta["kind"], device, counts)
    size = images.shape[1]
    with atomic_memmap(out_npy, np.uint8, (len(manifest), size, size, 3)) as out:
        for chunk in tqdm(batches(torch.arange(len(manifest)), settings["batch_size"]),
                          desc="synthesize", unit="batch", mininterval=5):
            out[chunk.numpy()] = to_uint8(synthesize(generator, data, attention,
                                                     manifest.iloc[chunk.numpy()], precision))
    write_csv(manifest, out_manifest)
    plot_examples(images, maps, np.load(out_npy, mmap_mode="r"), manifest, pool, out_figure)
    return manifest
