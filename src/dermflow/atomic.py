"""Atomic writes: a crash never leaves a half-written output behind.

The temporary file sits beside its target as ``.<name>.<random>.tmp`` (same file
system, so the rename is atomic); ``stale_temporaries`` finds those a killed job
left beside an output, ``temporaries_in`` those in a folder only one job writes (its
checkpoints), so the next run of the job can remove them.
"""

from __future__ import annotations

import json
import os
import re
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

# mkstemp's names (earlier dermflow versions) and ours: 8 characters of [a-z0-9_].
_RANDOM_PART = r"[a-z0-9_]{8}"


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


@contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temp path beside ``path``; rename it over ``path`` on success."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp_path = _create_temporary(target)
    try:
        yield tmp_path
        os.replace(tmp_path, target)
    finally:
        tmp_path.unlink(missing_ok=True)


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
