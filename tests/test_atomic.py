"""Atomic writes: whole files or none, with the permissions of a plain write."""

from __future__ import annotations

import os
import stat

import numpy as np
import pandas as pd
import pytest

from dermflow.atomic import (
    atomic_memmap,
    atomic_path,
    save_npy,
    stale_temporaries,
    write_csv,
    write_json,
)


@pytest.mark.parametrize("umask", [0o022, 0o027, 0o002])
def test_outputs_get_the_mode_a_plain_write_gives(tmp_path, umask):
    old = os.umask(umask)
    try:
        (tmp_path / "plain.txt").write_text("x")
        write_csv(pd.DataFrame({"a": [1]}), tmp_path / "t.csv")
        write_json({"a": 1}, tmp_path / "t.json")
        save_npy(np.zeros(3), tmp_path / "t.npy")
    finally:
        os.umask(old)
    expected = 0o666 & ~umask
    for name in ("plain.txt", "t.csv", "t.json", "t.npy"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == expected, name


def test_failed_write_leaves_neither_output_nor_temporary(tmp_path):
    with pytest.raises(RuntimeError), atomic_path(tmp_path / "out.csv") as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []


def test_stale_temporaries_are_those_of_the_named_output_only(tmp_path):
    stale = [tmp_path / ".images_64.npy.k2j_x9a0.tmp", tmp_path / ".images_64.npy.0123abcd.tmp"]
    others = [tmp_path / ".images_32.npy.k2j_x9a0.tmp", tmp_path / "images_64.npy",
              tmp_path / ".images_64.npy.lock", tmp_path / ".images_64.npy.toolongname.tmp"]
    for path in stale + others:
        path.write_text("")
    assert stale_temporaries(tmp_path / "images_64.npy") == sorted(stale)
    assert stale_temporaries(tmp_path / "nowhere" / "x.csv") == []


def test_a_memory_mapped_output_holds_its_blocks_before_it_is_filled(tmp_path):
    """A sparse map gets its blocks page by page as it is written, and a full disk then
    kills the process (SIGBUS); allocated up front, it never needs one."""
    with atomic_memmap(tmp_path / "cache.npy", np.uint8, (4, 64, 64, 3)) as array:
        tmp = next(tmp_path.glob(".cache.npy.*.tmp"))
        assert tmp.stat().st_blocks * 512 >= tmp.stat().st_size >= array.nbytes
        assert not array.any()
        array[1] = 7
    loaded = np.load(tmp_path / "cache.npy")
    assert loaded.shape == (4, 64, 64, 3) and loaded.sum() == 7 * 64 * 64 * 3
    assert [p.name for p in tmp_path.iterdir()] == ["cache.npy"]
