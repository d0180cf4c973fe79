"""The embedded demo dataset: a generated, seeded look-alike of HAM10000.

Same files and columns as the published dataset, 1-6 images per lesion, the
class imbalance scaled down (with a floor so a grouped 70:20:10 split can put
every class in every split), classes that differ the way dermoscopic classes do
(colour, shape, border, texture) so a small CNN can learn them at 32x32, and
drawn hair whose ground-truth mask and hair-free image are saved beside it, so
hair removal can be scored. Generated, not stored: no binary blobs in the repo.
"""

from __future__ import annotations

import logging
import os
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from dermflow.atomic import atomic_path, write_csv
from dermflow.data.images import write_image
from dermflow.data.isic2018 import GROUND_TRUTH, GROUND_TRUTH_TAB, IMAGES, ISIC_COLUMNS

log = logging.getLogger(__name__)

COLUMNS = ("lesion_id", "image_id", "dx", "dx_type", "age", "sex", "localization")
HAM_COUNTS = {"nv": 6705, "mel": 1113, "bkl": 1099, "bcc": 514, "akiec": 327, "vasc": 142,
              "df": 115}
MIN_IMAGES = 14  # and at most count // 6 images per lesion: >= 6 lesions in every class
IMAGES_PER_LESION = (np.arange(1, 7), np.array([0.5, 0.25, 0.1, 0.07, 0.05, 0.03]))
LOCALIZATIONS = ("back", "lower extremity", "trunk", "upper extremity", "abdomen", "face",
                 "chest", "foot", "neck", "scalp", "hand", "ear", "genital", "acral", "unknown")
DX_TYPES = {"nv": ("follow_up", "histo", "consensus"), "bkl": ("histo", "consensus", "confocal"),
            "df": ("histo", "consensus"), "vasc": ("histo", "consensus")}  # others: histo
SEXES = (("male", "female", "unknown"), (0.54, 0.45, 0.01))
HAIR_SHARE = 0.6
IMAGES_DIR = "HAM10000_images_part_1"
HAIR_SCALE = 4  # hair is drawn at 4x and shrunk: anti-aliased strands 1-3 px wide


@dataclass(frozen=True)
class Look:
    """How a class looks: RGB colour (0-1), shape irregularity, border softness, texture."""

    colour: tuple[float, float, float]
    irregular: float
    soft: float
    texture: str


LOOKS = {
    "nv": Look((0.45, 0.28, 0.16), 0.04, 0.04, "uniform"),  # brown, round, sharp
    "mel": Look((0.18, 0.11, 0.09), 0.22, 0.12, "dots"),  # dark, irregular, blue-grey dots
    "bkl": Look((0.62, 0.48, 0.30), 0.15, 0.03, "stripes"),  # tan, waxy ridges
    "bcc": Look((0.85, 0.60, 0.62), 0.08, 0.10, "vessels"),  # pink, arborising vessels
    "akiec": Look((0.78, 0.40, 0.35), 0.18, 0.06, "scales"),  # red, rough surface
    "vasc": Look((0.60, 0.10, 0.22), 0.05, 0.02, "lobules"),  # purple-red lacunae
    "df": Look((0.55, 0.36, 0.30), 0.03, 0.15, "scar"),  # fuzzy ring, white centre
}


def class_counts(n_images: int) -> dict[str, int]:
    """HAM10000's imbalance scaled to n_images, every class at least MIN_IMAGES."""
    total = sum(HAM_COUNTS.values())
    counts = {dx: max(MIN_IMAGES, round(n_images * c / total)) for dx, c in HAM_COUNTS.items()}
    counts["nv"] = n_images - sum(v for dx, v in counts.items() if dx != "nv")
    if counts["nv"] < MIN_IMAGES:
        raise ValueError(f"n_images: {n_images} is too few for 7 classes of {MIN_IMAGES} images")
    return counts


def lesion_sizes(count: int, rng: np.random.Generator) -> list[int]:
    """Images per lesion (1-6, mostly 1-2) adding up to count, in >= 6 lesions."""
    cap = max(1, min(6, count // 6))
    sizes: list[int] = []
    while sum(sizes) < count:
        size = int(rng.choice(IMAGES_PER_LESION[0], p=IMAGES_PER_LESION[1]))
        sizes.append(min(size, cap, count - sum(sizes)))
    return sizes


def _skin(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """Skin tone with vignetting (as under a dermatoscope) and sensor noise."""
    tone = np.array([0.86, 0.68, 0.58]) * rng.uniform(0.85, 1.05) + rng.normal(0, 0.02, 3)
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    shade = 1 - 0.25 * ((yy - 0.5 * h / max(h, w)) ** 2 + (xx - 0.5 * w / max(h, w)) ** 2)
    return np.clip(tone * shade[..., None] + rng.normal(0, 0.015, (h, w, 3)), 0, 1)


def _texture(rgb: np.ndarray, u: np.ndarray, v: np.ndarray, look: Look, seeds: np.ndarray,
             rng: np.random.Generator) -> np.ndarray:
    """The class's internal structure, in lesion coordinates (u, v) so it turns with the view."""
    if look.texture == "dots":
        dots = np.clip(sum(np.exp(-((u - a) ** 2 + (v - b) ** 2) / 0.012) for a, b in seeds), 0, 1)
        return rgb * (1 - 0.6 * dots)[..., None] + np.array([0.04, 0.06, 0.14]) * dots[..., None]
    if look.texture == "stripes":
        return rgb * (0.8 + 0.2 * np.sin(u * 18 + seeds[0, 0] * 6))[..., None]
    if look.texture == "vessels":
        vessels = np.clip(sum(np.exp(-((v - a * 0.6 - 0.2 * np.sin(u * 6 + b * 6)) ** 2) / 0.002)
                              for a, b in seeds[:3]), 0, 1)
        return rgb * (1 - 0.5 * vessels)[..., None] + np.array([0.35, 0.03, 0.05]) * \
            vessels[..., None]
    if look.texture == "scales":
        return rgb * np.sqrt(0.75 + 0.5 * rng.random(u.shape))[..., None]
    if look.texture == "lobules":
        lobes = np.clip(sum(np.exp(-((u - a / 2) ** 2 + (v - b / 2) ** 2) / 0.05)
                            for a, b in seeds[:4]), 0, 1)
        return rgb * (0.7 + 0.5 * lobes)[..., None]
    if look.texture == "scar":
        centre = np.exp(-(u ** 2 + v ** 2) / 0.08)[..., None]
        return rgb * (1 - centre) + np.array([0.95, 0.9, 0.85]) * centre
    return rgb


def _lesion(h: int, w: int, look: Look, shape: dict, view: dict,
            rng: np.random.Generator) -> np.ndarray:
    """RGBA float layer of one lesion seen from one view (rotation, scale, shift)."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    dy, dx = yy - h / 2 - view["dy"] * h, xx - w / 2 - view["dx"] * w
    theta = np.arctan2(dy, dx) + view["angle"]
    dist = np.hypot(dy, dx) / (min(h, w) * shape["radius"] * view["scale"])
    edge = 1 + sum(a * np.cos(k * theta + p) for k, a, p in shape["harmonics"])
    alpha = 1 / (1 + np.exp((dist - edge) / max(look.soft, 1e-3) * 2))
    rgb = np.broadcast_to(np.clip(np.array(look.colour) * shape["tint"], 0, 1), (h, w, 3))
    rgb = _texture(rgb, dist * np.cos(theta), dist * np.sin(theta), look, shape["texture_seed"],
                   rng)
    return np.concatenate([np.clip(rgb, 0, 1), alpha[..., None]], axis=2)


def _lesion_shape(look: Look, rng: np.random.Generator) -> dict:
    """What stays fixed across the images of one lesion."""
    return {
        "radius": rng.uniform(0.22, 0.36),
        "harmonics": [(k, rng.uniform(0, look.irregular) / k ** 0.5, rng.uniform(0, 2 * np.pi))
                      for k in range(2, 7)],
        "tint": rng.uniform(0.85, 1.15, 3),
        "texture_seed": rng.uniform(-0.7, 0.7, (6, 2)),
    }


def _hair(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """Coverage (0-1) of 1-6 dark, thin, curved strands (quadratic Bezier curves)."""
    big = np.zeros((h * HAIR_SCALE, w * HAIR_SCALE), np.uint8)
    t = np.linspace(0, 1, 40)[:, None]
    for _ in range(rng.integers(1, 7)):
        p0, p1, p2 = rng.uniform([0, 0], [w * HAIR_SCALE, h * HAIR_SCALE], (3, 2))
        curve = (1 - t) ** 2 * p0 + 2 * (1 - t) * t * p1 + t ** 2 * p2
        cv2.polylines(big, [curve.round().astype(np.int32)], False, 255,
                      thickness=int(rng.integers(HAIR_SCALE, 3 * HAIR_SCALE + 1)),
                      lineType=cv2.LINE_AA)
    return cv2.resize(big, (w, h), interpolation=cv2.INTER_AREA).astype(np.float64) / 255


def _to_uint8(image: np.ndarray) -> np.ndarray:
    return np.round(np.clip(image, 0, 1) * 255).astype(np.uint8)


def _render(look: Look, shape: dict, h: int, w: int, rng: np.random.Generator,
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(hairy image, hair-free image, hair mask 0/255) of one new view of a lesion, uint8."""
    view = {"angle": rng.uniform(0, 2 * np.pi), "scale": rng.uniform(0.9, 1.1),
            "dx": rng.uniform(-0.06, 0.06), "dy": rng.uniform(-0.06, 0.06)}
    layer = _lesion(h, w, look, shape, view, rng)
    clean = _skin(h, w, rng) * (1 - layer[..., 3:]) + layer[..., :3] * layer[..., 3:]
    clean = np.clip(clean * rng.uniform(0.92, 1.08), 0, 1)  # exposure differs between visits
    hair = _hair(h, w, rng) if rng.random() < HAIR_SHARE else np.zeros((h, w))
    hair_colour = np.array([0.12, 0.08, 0.05]) * rng.uniform(0.3, 1.5)  # black to dark brown
    hairy = clean * (1 - hair[..., None]) + hair_colour * hair[..., None]
    mask = np.where(hair > 0.3, 255, 0).astype(np.uint8)
    return _to_uint8(hairy), _to_uint8(clean), mask


def _lesion_images(n_images: int, width: int, height: int, seed: int, first_id: int,
                   ) -> Iterator[tuple[dict, str, np.ndarray, np.ndarray, np.ndarray]]:
    """(lesion metadata, image_id, hairy, clean, hair mask) for every image, in file order.

    Every lesion draws from its own Generator seeded by (seed, lesion number), so a
    seed always gives the same images.
    """
    rng = np.random.default_rng(seed)
    lesions = [(dx, size) for dx, count in class_counts(n_images).items()
               for size in lesion_sizes(count, rng)]
    n = 0
    for lesion_no, k in enumerate(rng.permutation(len(lesions))):
        dx, size = lesions[k]
        lrng = np.random.default_rng([seed, lesion_no])
        shape = _lesion_shape(LOOKS[dx], lrng)
        meta = {"lesion_id": f"HAM_{first_id + lesion_no:07d}", "dx": dx,
                "dx_type": str(lrng.choice(DX_TYPES.get(dx, ("histo",)))),
                "age": float(lrng.integers(1, 18) * 5) if lrng.random() > 0.02 else np.nan,
                "sex": str(lrng.choice(SEXES[0], p=SEXES[1])),
                "localization": str(lrng.choice(LOCALIZATIONS))}
        for _ in range(size):
            image_id = f"ISIC_{first_id + n:07d}"  # far from the real datasets' ids
            n += 1
            yield (meta, image_id, *_render(LOOKS[dx], shape, height, width, lrng))


def make_demo_dataset(out_dir: str | os.PathLike[str], *, n_images: int = 320, width: int = 100,
                      height: int = 75, seed: int = 0) -> pd.DataFrame:
    """Write the demo dataset in HAM10000's layout; returns its metadata table.

    Files are written in a fixed order, so a seed always gives the same bytes.
    """
    out = Path(out_dir)
    rows = []
    for meta, image_id, hairy, clean, mask in _lesion_images(n_images, width, height, seed,
                                                             9000000):
        write_image(out / IMAGES_DIR / f"{image_id}.jpg", hairy, quality=95)
        write_image(out / "hair_truth" / "clean" / f"{image_id}.png", clean)
        write_image(out / "hair_truth" / "masks" / f"{image_id}.png", mask)
        rows.append({**meta, "image_id": image_id})
    table = pd.DataFrame(rows, columns=list(COLUMNS))
    write_csv(table, out / "HAM10000_metadata.csv")
    log.info("demo dataset (seed %d): %d images %dx%d of %d lesions in %s; images per class: %s",
             seed, len(table), width, height, table["lesion_id"].nunique(), out,
             table["dx"].value_counts().to_dict())
    return table


def make_external_test(out_dir: str | os.PathLike[str], *, n_images: int = 100,
                       width: int = 100, height: int = 75, seed: int = 1,
                       layout: str = "onehot", missing: int = 0) -> pd.DataFrame:
    """A demo stand-in for ISIC 2018 Task 3's test set, in one of its published layouts.

    ``ISIC2018_Task3_Test_Images.zip`` (images under ``ISIC2018_Task3_Test_Images/``)
    and the ground truth: ``layout='onehot'`` writes the challenge's
    ``ISIC2018_Task3_Test_GroundTruth.csv`` (one-hot columns), ``'metadata'`` the
    Dataverse record's tab-separated ``ISIC2018_Task3_Test_GroundTruth.tab`` (HAM10000
    metadata columns). The last ``missing`` images are listed in the ground truth but
    left out of the zip, as the published zip lacks one. Drawn like the demo dataset
    but from another seed, so no lesion is shared with it. Returns the ground truth.
    """
    if layout not in ("onehot", "metadata"):
        raise ValueError(f"layout: unknown value {layout!r}; onehot or metadata")
    out = Path(out_dir)
    rows = []
    with atomic_path(out / f"{IMAGES}.zip") as tmp, zipfile.ZipFile(tmp, "w") as zf:
        for n, (meta, image_id, hairy, _, _) in enumerate(
                _lesion_images(n_images, width, height, seed, 9500000)):
            if n < n_images - missing:
                ok, jpeg = cv2.imencode(".jpg", cv2.cvtColor(hairy, cv2.COLOR_RGB2BGR),
                                        [cv2.IMWRITE_JPEG_QUALITY, 95])
                zf.writestr(f"{IMAGES}/{image_id}.jpg", jpeg.tobytes())
            rows.append((meta, image_id))
    if layout == "onehot":
        table = pd.DataFrame([{"image": image_id, **{k: float(meta["dx"] == v)
                                                     for k, v in ISIC_COLUMNS.items()}}
                              for meta, image_id in rows])
        write_csv(table, out / GROUND_TRUTH)
    else:
        table = pd.DataFrame([{**meta, "image_id": image_id, "dataset": "demo"}
                              for meta, image_id in rows],
                             columns=[*COLUMNS, "dataset"])
        with atomic_path(out / GROUND_TRUTH_TAB) as tmp:
            table.to_csv(tmp, sep="\t", index=False)
    return table
