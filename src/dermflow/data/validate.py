"""validate_dataset: find every image of the metadata, check it, and set bad ones aside.

Raw data is only read, never changed. Each problem becomes a quarantine row
naming the image, the kind of problem and the reason; with ``on_bad_input='fail'``
the stage stops and lists them all instead. Messages hold no memory addresses or
timings, so the same data gives the same quarantine.csv on every run.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import re
import warnings
import zipfile
from collections import Counter, defaultdict
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import NamedTuple

import pandas as pd
from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

from dermflow.atomic import write_csv
from dermflow.data.images import IMAGE_SUFFIXES, read_bytes, zip_ref
from dermflow.data.isic2018 import IMAGES as EXTERNAL_IMAGES
from dermflow.errors import DatasetError
from dermflow.labels import CLASS_INDEX, CLASSES

log = logging.getLogger(__name__)

REQUIRED_COLUMNS = ("lesion_id", "image_id", "dx")
MANIFEST_COLUMNS = ("image_id", "lesion_id", "dx", "label", "path", "width", "height")
# problem: one word per kind (counted in the log); reason: the details for that row.
QUARANTINE_COLUMNS = ("image_id", "path", "problem", "reason")
MAX_LISTED = 50
# The size policy: HAM10000 is 600x450 and the ISIC archive goes up to about 6000x4000
# (24 megapixels); anything over 64 megapixels is set aside before it is decoded, so one
# oversized file cannot exhaust memory (Pillow's own decompression-bomb limit is higher).
MAX_PIXELS = 64_000_000
# The floor (config validation.min_side): an image whose shorter side is under 16 px is
# a thumbnail, an icon or a placeholder, not a dermoscopic image, and the cache would
# blow it up into a blur. 16 is the smallest cache side (image_size) dermflow allows, so
# what is kept fills even that cache without upscaling; HAM10000 (600x450), its 1/3-scale
# copy (200x150) and the demo's images (100x75 by default, 32x32 at the smallest) are far
# above it.
MIN_SIDE = 16
EXIF_ORIENTATION = 0x0112
IMAGE_ID = re.compile(r"ISIC_\d+")  # segmentation masks (ISIC_..._segmentation.png) do not match
NOT_IMAGES = re.compile(r"segmentation|mask|truth")  # lesion masks, the demo's hair truth
ADDRESS = re.compile(r"\s*<[^<>]*\bat 0x[0-9a-fA-F]+>|\s*\bat 0x[0-9a-fA-F]+")


class BadInputError(DatasetError):
    """Validation refused the dataset; ``quarantine`` holds every row it set aside and why."""

    def __init__(self, message: str, quarantine: pd.DataFrame) -> None:
        super().__init__(message)
        self.quarantine = quarantine


class ImageCheck(NamedTuple):
    """What decoding one image file found."""

    problem: str | None  # None: the image is usable
    reason: str
    width: int = 0  # as stored: EXIF orientation is ignored, as every stage ignores it
    height: int = 0
    exif_orientation: bool = False


def image_sources(root: str | os.PathLike[str]) -> list[Path]:
    """Zips and folders under ``root`` (``root`` itself included) that hold HAM10000 images.

    The ISIC 2018 test images, which may sit in the same folder for
    ``dataset.external_test``, are not HAM10000's and are left out.
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"dataset folder {root} does not exist")

    def wanted(path: Path) -> bool:
        relative = str(path.relative_to(root)).lower()
        return not NOT_IMAGES.search(relative) and not path.name.startswith(EXTERNAL_IMAGES)

    sources = sorted(p for p in root.glob("*.zip") if wanted(p))
    folders = [root, *sorted(p for p in root.rglob("*") if p.is_dir() and wanted(p))]
    for folder in folders:
        if any(f.suffix.lower() in IMAGE_SUFFIXES and IMAGE_ID.fullmatch(f.stem)
               for f in folder.iterdir()):
            sources.append(folder)
    return sources


def raw_fingerprint(paths: Iterable[str | os.PathLike[str]]) -> str:
    """Short hash of the names, sizes and modification times of the files validation reads.

    A folder's own timestamp stays put when a file in it is overwritten, so Snakemake
    would not rerun validation after a bad image is fixed in place; a rule param
    holding this hash makes it. Zips and other files count as themselves, folders
    as the files directly in them (hidden ones aside), as ``index_images`` reads them.
    """
    digest = hashlib.sha256()
    for path in sorted(Path(p) for p in paths):
        if path.is_dir():
            files = sorted(f for f in path.iterdir() if f.is_file() and not f.name.startswith("."))
        else:
            files = [path]
        for f in files:
            st = f.stat() if f.exists() else None
            stamp = f"{st.st_size} {st.st_mtime_ns}" if st else "absent"
            digest.update(f"{f}\0{stamp}\n".encode())
    return digest.hexdigest()[:16]


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
            refs = [(f.name, str(f)) for f in sorted(source.iterdir()) if f.is_file()]
        for name, ref in refs:
            stem, suffix = os.path.splitext(os.path.basename(name))
            if suffix.lower() in IMAGE_SUFFIXES and IMAGE_ID.fullmatch(stem):
                found[stem].append(ref)
    return found


def _describe(err: BaseException) -> str:
    """An exception as a reason: its type and message, without memory addresses."""
    return f"{type(err).__name__}: {ADDRESS.sub('', str(err)).strip() or 'no details'}"


def _too_large(size: str) -> ImageCheck:
    """The size policy's reason, ``size`` as far as it is known."""
    return ImageCheck("too_large", f"image too large: {size}, over dermflow's limit of "
                      f"{MAX_PIXELS / 1e6:.0f} megapixels (see README, 'Validation')")


def _too_small(width: int, height: int, min_side: int) -> ImageCheck:
    """The size policy's floor as a reason."""
    return ImageCheck("too_small", f"image too small: {width}x{height}, its shorter side under "
                      f"the {min_side} px of validation.min_side (see README, 'Validation')",
                      width, height)


def check_image(ref: str, min_side: int = MIN_SIDE) -> ImageCheck:
    """Fully decode one image (so truncation is caught); any failure becomes a reason.

    The size policy (over MAX_PIXELS, a shorter side under ``min_side``) acts on the
    header, before decoding. One image at a time, so that ``dermflow predict`` can
    refuse the files validation would set aside.
    """
    try:
        data = read_bytes(ref)
        if not data:
            return ImageCheck("empty_file", "empty file (0 bytes)")
        with Image.open(io.BytesIO(data)) as img:
            width, height = img.size
            if width * height > MAX_PIXELS:
                return _too_large(f"{width}x{height} = {width * height / 1e6:.1f} megapixels")
            if min(width, height) < min_side:
                return _too_small(width, height, min_side)
            img.load()
            mode = img.mode
            oriented = img.getexif().get(EXIF_ORIENTATION, 1) != 1
    except DatasetError as err:
        return ImageCheck("unreadable", f"cannot read the file ({_describe(err.__cause__ or err)})")
    except Image.DecompressionBombError as err:  # over Pillow's limit, checked on opening
        pixels = re.search(r"(\d+) pixels", str(err))
        return _too_large(f"{int(pixels.group(1)) / 1e6:.1f} megapixels" if pixels
                          else "over Pillow's decompression-bomb limit")
    except UnidentifiedImageError:
        return ImageCheck("unreadable", "not a readable image (not a JPEG or PNG file, or its "
                                        "header is damaged)")
    except Exception as err:  # whatever a decoder raises, the file is at fault
        return ImageCheck("unreadable", f"not a readable image ({_describe(err)})")
    if mode != "RGB":
        return ImageCheck("colour_mode", f"colour mode {mode}, expected RGB", width, height)
    return ImageCheck(None, "", width, height, oriented)


def read_metadata(path: str | os.PathLike[str]) -> pd.DataFrame:
    """The metadata table (comma- or tab-separated, whatever its suffix), ``dx`` normalised;
    DatasetError names the file and any missing column.

    ``dx`` values differing from a class name only in case or surrounding spaces
    (``MEL``, ``mel  ``) are taken as that class, and the log says so.
    """
    try:
        with open(path, encoding="utf-8-sig") as fh:
            header = fh.readline()
        # By content, not suffix: Dataverse's archival .tab is tab-separated and quoted.
        meta = pd.read_csv(path, sep="\t" if "\t" in header else ",", encoding="utf-8-sig",
                           dtype={"lesion_id": str, "image_id": str, "dx": str})
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise DatasetError(f"cannot read metadata {path}: {err}") from err
    missing = [c for c in REQUIRED_COLUMNS if c not in meta.columns]
    if missing:
        raise DatasetError(f"metadata {path} lacks column(s) {', '.join(missing)}")
    normal = meta["dx"].str.strip().str.lower()
    changed = meta["dx"].notna() & (normal != meta["dx"])
    if changed.any():
        pairs = Counter(zip(meta.loc[changed, "dx"], normal[changed], strict=True))
        log.warning("metadata %s: dx normalised (case, spaces) on %d row(s): %s", path,
                    changed.sum(), ", ".join(f"{a!r} -> {b!r} ({n})" for (a, b), n in
                                             sorted(pairs.items())))
        meta["dx"] = normal
    return meta


def _lines(index: Iterable[int]) -> str:
    """Metadata rows as line numbers of the CSV file (the header is line 1)."""
    return ", ".join(str(i + 2) for i in index)


def _duplicates(meta: pd.DataFrame, name: str) -> tuple[list[int], dict[int, tuple[str, str]]]:
    """(rows to drop, problems): exact repeats are kept once; conflicting ones are all bad."""
    drop: list[int] = []
    problems: dict[int, tuple[str, str]] = {}
    repeated = meta[meta["image_id"].notna() & meta["image_id"].duplicated(keep=False)]
    for image_id, rows in repeated.groupby("image_id", sort=True):
        differing = [c for c in rows.columns if rows[c].nunique(dropna=False) > 1]
        if not differing:
            drop.extend(rows.index[1:])
            log.warning("metadata %s: %s is listed %d times, identically (lines %s); kept once",
                        name, image_id, len(rows), _lines(rows.index))
            continue
        for i in rows.index:
            problems[i] = ("duplicate", f"image_id on lines {_lines(rows.index)} of {name} with "
                                        f"different {', '.join(differing)}: keep one row")
    return drop, problems


def problem_counts(quarantine: pd.DataFrame) -> str:
    """'2 unreadable, 1 missing_file': quarantined rows per kind of problem."""
    counts = quarantine["problem"].value_counts()
    return ", ".join(f"{n} {problem}" for problem, n in sorted(counts.items()))


def _listing(quarantine: pd.DataFrame) -> str:
    """The first MAX_LISTED quarantine rows, one per line."""
    lines = [f"{r.image_id} ({r.path or 'no file'}): {r.reason}"
             for r in quarantine.head(MAX_LISTED).itertuples()]
    more = len(quarantine) - MAX_LISTED
    return "\n  " + "\n  ".join(lines + ([f"... and {more} more"] if more > 0 else []))


def validate_dataset(metadata: str | os.PathLike[str], sources: list[Path],
                     on_bad_input: str = "fail", threads: int = 1, *,
                     required_classes: tuple[str, ...] = CLASSES,
                     missing_is_bad: bool = True,
                     hint: str = "set on_bad_input: quarantine",
                     min_side: int = MIN_SIDE,
                     ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(manifest, quarantine) for the images the metadata lists.

    Raises BadInputError (its quarantine table attached, to be written for the user)
    when ``on_bad_input`` is 'fail' and a row is bad, when nothing usable is left,
    or when a class of ``required_classes`` has no usable image: every split,
    classifier head and report assumes HAM10000's seven classes, whatever the task.
    With ``missing_is_bad=False`` rows whose image file is absent are quarantined
    and warned about but never fail the run (the external test set's ground truth
    lists an image its published zip lacks). ``hint`` is how the caller's user
    switches to quarantine; ``min_side`` is the size policy's floor (check_image).
    """
    name = Path(metadata).name
    meta = read_metadata(metadata)
    found = index_images(sources)
    log.info("metadata %s: %d rows; %d image files in %d sources",
             metadata, len(meta), len(found), len(sources))
    drop, problems = _duplicates(meta, name)
    meta = meta.drop(index=drop)
    for i, row in meta.iterrows():
        if i in problems:
            continue
        if pd.isna(row["image_id"]) or not str(row["image_id"]).strip():
            problems[i] = ("image_id", f"missing image_id on line {i + 2} of {name}")
        elif pd.isna(row["lesion_id"]) or not str(row["lesion_id"]).strip():
            problems[i] = ("lesion_id", "missing lesion_id")
        elif row["dx"] not in CLASS_INDEX:
            problems[i] = ("dx", f"unknown dx {row['dx']!r} (expected one of "
                                 f"{', '.join(CLASS_INDEX)})")
        elif not found.get(row["image_id"]):
            problems[i] = ("missing_file", "missing file: no image with this image_id in the "
                                           "dataset")
        elif len(found[row["image_id"]]) > 1:
            problems[i] = ("found_twice", "image found more than once: "
                           + ", ".join(found[row["image_id"]]))
    paths = {i: found[meta.at[i, "image_id"]][0] for i in meta.index if i not in problems}
    # Pillow warns on opening an image of 89-179 megapixels; the size policy (MAX_PIXELS, lower)
    # sets it aside by name right after, so the warning would only repeat that, unnamed.
    with warnings.catch_warnings(), ThreadPoolExecutor(max(1, threads)) as pool:
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        checks = list(tqdm(pool.map(check_image, paths.values(), [min_side] * len(paths)),
                           total=len(paths), desc="validate", unit="img", mininterval=2))
    sizes = {}
    oriented = 0
    for i, check in zip(paths, checks, strict=True):
        if check.problem:
            problems[i] = (check.problem, check.reason)
        else:
            sizes[i] = (check.width, check.height)
            oriented += check.exif_orientation
    if oriented:
        log.info("%d image(s) carry an EXIF orientation tag; it is ignored, pixels are used as "
                 "stored (README, 'Validation')", oriented)

    quarantine = pd.DataFrame(
        [(meta.at[i, "image_id"], paths.get(i, ";".join(found.get(meta.at[i, "image_id"], []))),
          problem, reason) for i, (problem, reason) in sorted(problems.items())],
        columns=list(QUARANTINE_COLUMNS))
    if not quarantine.empty:
        log.warning("quarantined %d of %d metadata rows: %s", len(quarantine), len(meta),
                    problem_counts(quarantine))
    bad = quarantine if missing_is_bad else quarantine[quarantine["problem"] != "missing_file"]
    if len(bad) and on_bad_input == "fail":
        raise BadInputError(f"{len(bad)} bad input(s) in {metadata} ({problem_counts(bad)}); "
                            f"{hint} to leave them out:{_listing(bad)}", quarantine)

    good = meta.loc[sorted(sizes)].copy()
    good["label"] = good["dx"].map(CLASS_INDEX)
    good["path"] = [paths[i] for i in good.index]
    good["width"] = [sizes[i][0] for i in good.index]
    good["height"] = [sizes[i][1] for i in good.index]
    extra = [c for c in meta.columns if c not in MANIFEST_COLUMNS]
    manifest = good[list(MANIFEST_COLUMNS) + extra].reset_index(drop=True)
    if manifest.empty:
        raise BadInputError(f"no usable image in {metadata}: all {len(meta)} row(s) quarantined "
                            f"({problem_counts(quarantine)}):{_listing(quarantine)}", quarantine)
    _require_classes(manifest, meta, quarantine, required_classes, metadata)
    log.info("manifest: %d usable images", len(manifest))
    return manifest, quarantine


def write_validation(metadata: str | os.PathLike[str], sources: list[Path], *,
                     out_manifest: str | os.PathLike[str], out_quarantine: str | os.PathLike[str],
                     rejected: str | os.PathLike[str], on_bad_input: str = "fail",
                     threads: int = 1, min_side: int = MIN_SIDE,
                     hint: str = "set on_bad_input: quarantine",
                     ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Rule validate_dataset and ``dermflow validate``: validate_dataset, its manifest and
    quarantine written.

    When validation refuses the dataset, the user needs the rows it set aside: they go to
    ``rejected`` (the rule's lies beside its log, as Snakemake deletes a failed job's
    outputs), the error names that file, and no manifest is left (an earlier run's would
    mislead).
    """
    try:
        manifest, quarantine = validate_dataset(metadata, sources, on_bad_input, threads,
                                                hint=hint, min_side=min_side)
    except BadInputError as err:
        Path(out_manifest).unlink(missing_ok=True)
        write_csv(err.quarantine, rejected)
        raise BadInputError(f"{err}\nevery row set aside, with its reason: {rejected}",
                            err.quarantine) from None
    Path(rejected).unlink(missing_ok=True)  # from an earlier refused run
    write_csv(manifest, out_manifest)
    write_csv(quarantine, out_quarantine)
    return manifest, quarantine


def _require_classes(manifest: pd.DataFrame, meta: pd.DataFrame, quarantine: pd.DataFrame,
                     classes: tuple[str, ...], metadata: str | os.PathLike[str]) -> None:
    """BadInputError naming each class of ``classes`` without a usable image, and why."""
    absent = [dx for dx in classes if dx not in set(manifest["dx"])]
    if not absent:
        return
    details = []
    for dx in absent:
        ids = set(meta.loc[meta["dx"] == dx, "image_id"])
        if not ids:
            details.append(f"class {dx}: 0 rows in the metadata")
            continue
        set_aside = quarantine[quarantine["image_id"].isin(ids)]
        details.append(f"class {dx}: {len(ids)} image(s) in the metadata, all quarantined "
                       f"({problem_counts(set_aside)})")
    raise BadInputError(
        f"{metadata}: no usable image of class(es) {', '.join(absent)} ({'; '.join(details)}). "
        f"Every HAM10000 class ({', '.join(classes)}) needs images, whatever the task: "
        "add or fix them (quarantine.csv says why each row was set aside)", quarantine)
