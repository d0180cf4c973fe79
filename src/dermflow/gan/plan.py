"""How many synthetic images each class gets, and from which sources: the manifest that
generation (dermflow.gan.synthesis) and classical augmentation (balance mode ``augment``)
both fill.

The counts follow the paper's Table 2: each class is topped up to a target total
(bkl 3600, nv 6800, df 2500, mel 3600, vasc 2500, bcc 2500, akiec 2500 for HAM10000's
10,015 images). The targets are scaled to the pool the generator learnt from
(``grouped``: the train split, so about 70% of them), and explicit per-class counts
replace them when given. Every manifest row is reproducible on its own: it holds its
class, its source real image and the seed of its latent vector; sources are used
round-robin so each real image of a class seeds about as many images as any other.
No torch here.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from dermflow.errors import DatasetError
from dermflow.labels import CLASSES

MANIFEST_COLUMNS = ("synthetic_id", "row", "dx", "label", "source_image_id", "source_row",
                    "lesion_id", "seed")


def synthetic_counts(pool_counts: dict[str, int], settings: dict[str, Any]) -> dict[str, int]:
    """Synthetic images per class: explicit counts, else targets scaled to the pool."""
    if settings.get("counts"):
        return {dx: int(settings["counts"].get(dx, 0)) for dx in CLASSES}
    scale = sum(pool_counts.values()) / settings["reference_images"]
    return {dx: max(0, round(settings["targets"][dx] * scale) - pool_counts.get(dx, 0))
            for dx in CLASSES}


def plan(pool: pd.DataFrame, counts: dict[str, int], seed: int, *,
         with_sources: bool = True) -> pd.DataFrame:
    """The manifest: one row per synthetic image with its class, source and latent seed
    (``with_sources`` False: a generator that sees no real image, so no source columns)."""
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
    return numbered(pd.DataFrame({
        "dx": chosen["dx"].to_numpy(),
        "label": chosen["label"].to_numpy(),
        "source_image_id": chosen["image_id"].to_numpy() if with_sources else "",
        "source_row": chosen["row"].to_numpy() if with_sources else -1,
        "lesion_id": chosen["lesion_id"].to_numpy() if with_sources else "",
        "seed": seeds.astype(np.int64),
    }))


def numbered(manifest: pd.DataFrame) -> pd.DataFrame:
    """Manifest rows with consecutive synthetic ids and array rows, in the standard columns."""
    out = manifest.reset_index(drop=True).assign(
        synthetic_id=[f"SYN_{i:07d}" for i in range(len(manifest))], row=np.arange(len(manifest)))
    extra = [c for c in out.columns if c not in MANIFEST_COLUMNS]
    return out[[*MANIFEST_COLUMNS, *extra]]
