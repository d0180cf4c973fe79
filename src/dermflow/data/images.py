"""Reading and writing images, from folders or straight out of zip archives.

An image reference is a path, or ``archive.zip::member`` for a file inside a zip,
so the published HAM10000 zips never need to be unpacked. Pixels are used as
stored: an EXIF orientation tag is ignored (a dermoscopic image has no "up", and
this keeps the size validation records, read from the file's header, the size
every stage works with).
"""

from __future__ import annotations

import functools
import os
import zipfile
from pathlib import Path

import cv2
import numpy as np

from dermflow.atomic import write_bytes
from dermflow.errors import DatasetError

ZIP_SEP = "::"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
# OpenCV's IMREAD_COLOR alone turns a JPEG by its EXIF orientation; Pillow's size does not.
COLOR = cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION
GRAYSCALE = cv2.IMREAD_GRAYSCALE | cv2.IMREAD_IGNORE_ORIENTATION


@functools.lru_cache(maxsize=16)
def _open_zip(path: str) -> zipfile.ZipFile:
    """Zip handles are reused: reopening a 10,000-member archive per image is slow."""
    return zipfile.ZipFile(path)


def zip_ref(archive: str | os.PathLike[str], member: str) -> str:
    """The reference of ``member`` inside ``archive``."""
    return f"{archive}{ZIP_SEP}{member}"


def read_bytes(ref: str) -> bytes:
    """Raw bytes of an image file or zip member; DatasetError names a missing one."""
    try:
        if ZIP_SEP in ref:
            archive, member = ref.split(ZIP_SEP, 1)
            return _open_zip(archive).read(member)
        return Path(ref).read_bytes()
    except (OSError, KeyError, zipfile.BadZipFile) as err:
        raise DatasetError(f"cannot read image {ref}: {err}") from err


def decode_rgb(data: bytes, ref: str) -> np.ndarray:
    """Decode encoded bytes to an H x W x 3 uint8 RGB array, EXIF orientation ignored."""
    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), COLOR)
    if bgr is None:
        raise DatasetError(f"cannot decode image {ref}")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def read_rgb(ref: str) -> np.ndarray:
    """Read an image reference as H x W x 3 uint8 RGB."""
    return decode_rgb(read_bytes(ref), ref)


def read_mask(path: str | os.PathLike[str]) -> np.ndarray:
    """Read a single-channel mask as a bool array."""
    mask = cv2.imread(str(path), GRAYSCALE)
    if mask is None:
        raise DatasetError(f"cannot read mask {path}")
    return mask > 127


def write_image(path: str | os.PathLike[str], image: np.ndarray, quality: int = 95) -> None:
    """Write RGB (H x W x 3) or gray (H x W) uint8 atomically; format from the suffix."""
    target = Path(path)
    array = cv2.cvtColor(image, cv2.COLOR_RGB2BGR) if image.ndim == 3 else image
    jpeg = target.suffix.lower() in (".jpg", ".jpeg")
    params = [cv2.IMWRITE_JPEG_QUALITY, quality] if jpeg else []
    ok, encoded = cv2.imencode(target.suffix, array, params)
    if not ok:
        raise DatasetError(f"cannot encode image {target}")
    write_bytes(encoded.tobytes(), target)
