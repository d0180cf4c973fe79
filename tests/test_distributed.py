"""DDP: two gloo processes on the CPU train to the weights one process reaches alone, started
from a Snakemake script, reporting a user's error as one."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from dermflow.training.batches import ImageTensor
from dermflow.training.determinism import Determinism, DeterminismError, set_deterministic
from dermflow.training.distributed import rank_world, run_distributed
from dermflow.training.loop import TrainConfig, fit

SRC = Path(__file__).resolve().parents[1] / "src"
CFG = TrainConfig(epochs=2, batch_size=8, lr=1e-2, augment=True, seed=3)


class Tiny(nn.Module):
    """A small CNN without BatchNorm: per-rank batch statistics would differ by design."""

    num_classes = 7

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(),
                                 nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 7))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def train(out: Path | None = None) -> dict[str, torch.Tensor]:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (40, 16, 16, 3), dtype=np.uint8)
    data = ImageTensor(images, np.arange(40) % 7, torch.device("cpu"), (0.5,) * 3, (0.5,) * 3)
    torch.manual_seed(0)
    result = fit(Tiny(), data, np.arange(32), np.arange(32, 40), CFG,
                 checkpoint=out.with_suffix(".ckpt") if out else None)
    if out is not None and rank_world()[0] == 0:
        torch.save(result.state, out)
    return result.state


def _rank(rank: int, out: Path) -> None:
    torch.set_num_threads(1)
    assert rank_world() == (rank, 2)
    train(out)


def test_two_gloo_processes_match_one(tmp_path):
    single = train()
    run_distributed(_rank, 2, tmp_path / "ddp.pt", backend="gloo")
    ddp = torch.load(tmp_path / "ddp.pt")
    for name, value in single.items():
        assert torch.allclose(value, ddp[name], atol=1e-5), name
    assert (tmp_path / "ddp.ckpt").is_file()  # written by rank 0 only, once per epoch


def test_global_batch_must_split_evenly(tmp_path):
    with pytest.raises(Exception, match="does not split over 2 GPUs"):
        run_distributed(_odd_batch, 2, backend="gloo")


def _odd_batch(rank: int) -> None:
    data = ImageTensor(np.zeros((4, 8, 8, 3), np.uint8), np.zeros(4, int), torch.device("cpu"),
                       (0.5,) * 3, (0.5,) * 3)
    fit(Tiny(), data, np.arange(4), np.arange(4), TrainConfig(epochs=1, batch_size=3))


RANKS = """\
from pathlib import Path


def record(rank: int, out: str) -> None:
    Path(out, f"rank{rank}").write_text("trained")
"""

SCRIPT = """\
import ranks
from dermflow.training.distributed import run_distributed

run_distributed(ranks.record, 2, snakemake.output[0], backend="gloo")
"""


def test_workers_start_from_a_snakemake_script(tmp_path: Path):
    """Snakemake runs a rule's script as a copy with its ``snakemake`` object prepended and
    ``__file__`` pointing at the script itself, which has no main guard: the workers must
    not run that file again (they would fail on ``snakemake``, which only the copy has)."""
    (tmp_path / "ranks.py").write_text(RANKS)
    (tmp_path / "train.py").write_text(SCRIPT)
    out = tmp_path / "out"
    out.mkdir()
    preamble = ("import types; snakemake = types.SimpleNamespace(output=[{out!r}]); "
                "__real_file__ = __file__; __file__ = {script!r}\n").format(
        out=str(out), script=str(tmp_path / "train.py"))
    copy = tmp_path / ".snakemake/scripts/tmpab12.train.py"
    copy.parent.mkdir(parents=True)
    copy.write_text(preamble + SCRIPT)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(SRC)])}
    proc = subprocess.run([sys.executable, str(copy)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(p.name for p in out.iterdir()) == ["rank0", "rank1"]


def _nondeterministic_op(rank: int) -> None:
    if rank == 1:
        torch.zeros(3).put_(torch.tensor([0, 0]), torch.ones(2))  # no deterministic kernel


def test_a_user_error_in_a_worker_is_raised_as_itself():
    """deterministic: true reaches the workers, and an op without a deterministic kernel is
    the config's problem, reported in one line, not a worker's traceback."""
    before = Determinism.current()
    try:
        set_deterministic(True)
        with pytest.raises(DeterminismError, match=r"deterministic: true, but put_ has no "):
            run_distributed(_nondeterministic_op, 2, backend="gloo")
    finally:
        before.apply()
