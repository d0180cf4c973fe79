"""Atomic writes: a crash never leaves a half-written output behind.

The temporary file sits beside its target as ``.<name>.<random>.tmp`` (same file
system, so the rename is atomic); ``stale_temporaries`` finds those a killed job
left beside an output, ``temporaries_in`` those in a folder only one job writes (its
checkpoints), so the next run of the job can remove them.

A full disk is a ``DiskFullError`` naming the file, the bytes it needs (where they are
known before writing) and the bytes free, with the temporary removed: outputs of a
known size reserve their blocks first (``reserve``), so a memory map of one (which the
kernel fills lazily, killing the process with SIGBUS when a page finds no free block)
never runs out mid-write.
"""

from __future__ import annotations

import errno
import io
import json
import os
import re
import secrets
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from dermflow.errors import DiskFullError

# mkstemp's names (earlier dermflow versions) and ours: 8 characters of [a-z0-9_].
_RANDOM_PART = r"[a-z0-9_]{8}"
# "no space left on device" and "disk quota exceeded": both are fixed by making room.
NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


def _create_temporary(target: Path) -> Path:
    """A new empty file beside ``target``, created with the mode a plain write would give.

    ``tempfile.mkstemp`` creates files with mode 0600, which survives the rename and
    hides results from colleagues; ``os.open`` with 0666 lets the umask (and default
    ACLs) decide, as ``open(path, "w")`` does.
    """
    while True:
        tmp = target.with_name(f".{target.name}.{secrets.token_hex(4)}.tmp")
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        except FileExistsError:
            continue
        return tmp


def stale_temporaries(path: str | os.PathLike[str]) -> list[Path]:
    """Temporary files of ``path`` that an interrupted atomic write left beside it."""
    target = Path(path)
    pattern = re.compile(rf"\.{re.escape(target.name)}\.{_RANDOM_PART}\.tmp")
    if not target.parent.is_dir():
        return []
    return sorted(p for p in target.parent.iterdir() if pattern.fullmatch(p.name))


def temporaries_in(folder: str | os.PathLike[str]) -> list[Path]:
    """Every atomic write's temporary file directly in ``folder``, whatever its target."""
    pattern = re.compile(rf"\..+\.{_RANDOM_PART}\.tmp")
    if not Path(folder).is_dir():
        return []
    return sorted(p for p in Path(folder).iterdir() if pattern.fullmatch(p.name))


def _existing(path: Path) -> Path:
    """``path`` or its nearest ancestor that exists (an output's folder may not yet)."""
    path = Path(os.path.abspath(path))
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def mount_point(path: str | os.PathLike[str]) -> Path:
    """The mount point of the file system ``path`` is (or would be) written on."""
    here = _existing(Path(path))
    device = here.stat().st_dev
    while here != here.parent and here.parent.stat().st_dev == device:
        here = here.parent
    return here


def free_bytes(path: str | os.PathLike[str]) -> int:
    """Bytes an unprivileged user may still write on ``path``'s file system."""
    return shutil.disk_usage(_existing(Path(path))).free


def _amount(n: int) -> str:
    """'30,105,728 bytes (30.1 MB)': exact, and readable when large."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6)):
        if n >= scale:
            return f"{n:,} bytes ({n / scale:.1f} {unit})"
    return f"{n:,} bytes"


def disk_full(path: str | os.PathLike[str], needed: int | None = None,
              free: int | None = None) -> DiskFullError:
    """The one-line error for ``path`` not fitting on its file system."""
    free = free_bytes(path) if free is None else free
    need = f"needs {_amount(needed)}" if needed is not None else "does not fit"
    return DiskFullError(
        f"disk full: {path} {need}, {_amount(free)} free on {mount_point(path)}; free some space "
        "there (or give the run a larger disk) and rerun: what earlier stages wrote is kept")


def reserve(tmp: str | os.PathLike[str], size: int, target: str | os.PathLike[str]) -> None:
    """Allocate ``size`` bytes of the file ``tmp`` (the temporary of ``target``) now.

    Checked against the free space first (shutil.disk_usage), then allocated with
    posix_fallocate, so neither a later write nor a memory map of the file needs a
    block the disk no longer has. The file reads as zeros up to ``size``; where the
    platform has no posix_fallocate the check alone is made.
    """
    usage = shutil.disk_usage(tmp)
    held = os.stat(tmp).st_blocks * 512
    if usage.total and usage.free < size - held:  # total 0: a file system that tells no sizes
        raise disk_full(target, size, usage.free)
    if not size or not hasattr(os, "posix_fallocate"):  # fallocate refuses a length of 0
        return
    fd = os.open(tmp, os.O_RDWR)
    try:
        os.posix_fallocate(fd, 0, size)
    except OSError as err:  # the space went between the check and the allocation
        if err.errno not in NO_SPACE:
            raise
        raise disk_full(target, size) from err
    finally:
        os.close(fd)


@contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temp path beside ``path``; rename it over ``path`` on success.

    A full disk while writing it becomes a DiskFullError naming ``path``; the
    temporary is removed whatever happens.
    """
    target = Path(path)
    tmp_path: Path | None = None
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp_path = _create_temporary(target)
        yield tmp_path
        os.replace(tmp_path, target)
    except OSError as err:
        if err.errno not in NO_SPACE:
            raise
        raise disk_full(target) from err
    finally:
        if tmp_path is not None:
            tmp_path.unlink(missing_ok=True)


def write_bytes(data: bytes, path: str | os.PathLike[str]) -> None:
    """Write ``data`` atomically, its space reserved first (a full disk names the bytes)."""
    with atomic_path(path) as tmp:
        reserve(tmp, len(data), path)
        with open(tmp, "r+b") as fh:  # r+: keeps the reserved blocks, as w would not
            fh.write(data)


@contextmanager
def atomic_memmap(path: str | os.PathLike[str], dtype: npt.DTypeLike,
                  shape: tuple[int, ...]) -> Iterator[np.memmap]:
    """A writable, zero-filled .npy memory map, renamed over ``path`` once the block ends.

    Every block of the file is reserved before the map is made: the map fills an
    output larger than memory without holding it, and a full disk is a DiskFullError
    before any work rather than a SIGBUS halfway through.
    """
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {
        "descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": False,
        "shape": tuple(shape)})
    size = header.tell() + int(np.prod(shape)) * np.dtype(dtype).itemsize
    with atomic_path(path) as tmp:
        reserve(tmp, size, path)
        with open(tmp, "r+b") as fh:
            fh.write(header.getvalue())
        array = np.lib.format.open_memmap(tmp, mode="r+")
        yield array
        array.flush()


def write_csv(df: pd.DataFrame, path: str | os.PathLike[str]) -> None:
    """Write a table without its index, atomically."""
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False)


def write_json(obj: Any, path: str | os.PathLike[str]) -> None:
    """Write indented, key-sorted JSON atomically (stable bytes for stable input)."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def save_npy(array: np.ndarray, path: str | os.PathLike[str]) -> None:
    """Save an array as .npy atomically."""
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.save(fh, array)
