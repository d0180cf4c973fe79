"""validate_dataset: find every image of the metadata, check it, and set bad ones aside.

Raw data is only read, never changed. Each problem becomes a quarantine row
naming the image and the reason; with ``on_bad_input='fail'`` the stage stops
and lists them all instead.
"""

from __future__ import annotations

import io
import logging
import os
import re
import zipfile
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd
from PIL import Image
from tqdm import tqdm

from dermflow.data.images import IMAGE_SUFFIXES, read_bytes, zip_ref
from dermflow.errors import DatasetError
from dermflow.labels import CLASS_INDEX

log = logging.getLogger(__name__)

REQUIRED_COLUMNS = ("lesion_id", "image_id", "dx")
MANIFEST_COLUMNS = ("image_id", "lesion_id", "dx", "label", "path", "width", "height")
QUARANTINE_COLUMNS = ("image_id", "path", "reason")
MAX_LISTED = 50
IMAGE_ID = re.compile(r"ISIC_\d+")  # segmentation masks (ISIC_..._segmentation.png) do not match
NOT_IMAGES = re.compile(r"segmentation|mask|truth")  # lesion masks, the demo's hair truth


def image_sources(root: str | os.PathLike[str]) -> list[Path]:
    """Zips and folders under ``root`` that hold images, in the published layouts."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"dataset folder {root} does not exist")
    sources = sorted(p for p in root.glob("*.zip") if not NOT_IMAGES.search(p.name.lower()))
    folders = [p for p in root.rglob("*") if p.is_dir()
               and not NOT_IMAGES.search(str(p.relative_to(root)).lower())]
    for folder in sorted(folders):
        if any(f.suffix.lower() in IMAGE_SUFFIXES and IMAGE_ID.fullmatch(f.stem)
               for f in folder.iterdir()):
            sources.append(folder)
    return sources


def index_images(sources: list[Path]) -> dict[str, list[str]]:
    """image_id → every reference found for it (more than one is a conflict)."""
    found: dict[str, list[str]] = defaultdict(list)
    for source in sources:
        if source.suffix.lower() == ".zip":
            try:
                names = zipfile.ZipFile(source).namelist()
            except (OSError, zipfile.BadZipFile) as err:
                raise DatasetError(f"cannot open image archive {source}: {err}") from err
            refs = [(n, zip_ref(source, n)) for n in names]
        else:
            refs = [(f.name, str(f)) for f in sorted(source.iterdir())]
        for name, ref in refs:
            stem, suffix = os.path.splitext(os.path.basename(name))
            if suffix.lower() in IMAGE_SUFFIXES and IMAGE_ID.fullmatch(stem):
                found[stem].append(ref)
    return found


def check_image(ref: str) -> tuple[str | None, int, int]:
    """(problem or None, width, height): fully decodes, so truncation is caught."""
    try:
        data = read_bytes(ref)
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            mode, (width, height) = img.mode, img.size
    except DatasetError:
        return "missing or unreadable file", 0, 0
    except (OSError, SyntaxError, ValueError) as err:
        return f"not a readable image ({err})", 0, 0
    if mode != "RGB":
        return f"colour mode {mode}, expected RGB", width, height
    return None, width, height


def read_metadata(path: str | os.PathLike[str]) -> pd.DataFrame:
    """The metadata table; DatasetError names the file and any missing column."""
    try:
        meta = pd.read_csv(path, dtype={"lesion_id": str, "image_id": str, "dx": str})
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise DatasetError(f"cannot read metadata {path}: {err}") from err
    missing = [c for c in REQUIRED_COLUMNS if c not in meta.columns]
    if missing:
        raise DatasetError(f"metadata {path} lacks column(s) {', '.join(missing)}")
    return meta


def validate_dataset(metadata: str | os.PathLike[str], sources: list[Path],
                     on_bad_input: str = "fail",
                     threads: int = 1) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(manifest, quarantine) for the images the metadata lists."""
    meta = read_metadata(metadata)
    found = index_images(sources)
    log.info("metadata %s: %d rows; %d image files in %d sources",
             metadata, len(meta), len(found), len(sources))
    problems: dict[int, str] = {}
    duplicated = meta["image_id"].duplicated(keep=False)
    for i in meta.index[duplicated]:
        problems[i] = "duplicate image_id in metadata"
    for i, row in meta.iterrows():
        if i in problems:
            continue
        if pd.isna(row["lesion_id"]) or not str(row["lesion_id"]).strip():
            problems[i] = "missing lesion_id"
        elif row["dx"] not in CLASS_INDEX:
            problems[i] = f"unknown dx {row['dx']!r} (expected one of {', '.join(CLASS_INDEX)})"
        elif not found.get(row["image_id"]):
            problems[i] = "missing file: no image with this image_id in the dataset"
        elif len(found[row["image_id"]]) > 1:
            problems[i] = "image found more than once: " + ", ".join(found[row["image_id"]])
    paths = {i: found[meta.at[i, "image_id"]][0] for i in meta.index if i not in problems}
    with ThreadPoolExecutor(max(1, threads)) as pool:
        checks = list(tqdm(pool.map(check_image, paths.values()), total=len(paths),
                           desc="validate", unit="img", mininterval=2))
    sizes = {}
    for i, (problem, width, height) in zip(paths, checks, strict=True):
        if problem:
            problems[i] = problem
        else:
            sizes[i] = (width, height)

    quarantine = pd.DataFrame(
        [(meta.at[i, "image_id"], paths.get(i, ";".join(found.get(meta.at[i, "image_id"], []))),
          reason) for i, reason in sorted(problems.items())],
        columns=list(QUARANTINE_COLUMNS))
    if problems and on_bad_input == "fail":
        lines = [f"{r.image_id} ({r.path or 'no file'}): {r.reason}"
                 for r in quarantine.head(MAX_LISTED).itertuples()]
        more = len(quarantine) - MAX_LISTED
        tail = [f"... and {more} more"] if more > 0 else []
        raise DatasetError(
            f"{len(quarantine)} bad input(s) in {metadata} (set on_bad_input: quarantine to "
            "leave them out):\n  " + "\n  ".join(lines + tail))

    good = meta.loc[sorted(sizes)].copy()
    good["label"] = good["dx"].map(CLASS_INDEX)
    good["path"] = [paths[i] for i in good.index]
    good["width"] = [sizes[i][0] for i in good.index]
    good["height"] = [sizes[i][1] for i in good.index]
    extra = [c for c in meta.columns if c not in MANIFEST_COLUMNS]
    manifest = good[list(MANIFEST_COLUMNS) + extra].reset_index(drop=True)
    if manifest.empty:
        raise DatasetError(f"no usable image in {metadata}")
    log.info("manifest: %d usable images; quarantined: %d", len(manifest), len(quarantine))
    return manifest, quarantine
