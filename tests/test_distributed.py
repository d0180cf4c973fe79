"""DDP: two gloo processes on the CPU train to the weights one process reaches alone, started
from a Snakemake script, reporting a user's error as one, logging as the job, and never
outliving the job."""

from __future__ import annotations

import ast
import errno
import importlib
import inspect
import logging
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from stage_configs import train_config
from torch import nn

from dermflow.errors import DamagedFileError, DermflowError
from dermflow.logs import job_formatter, log_as_job
from dermflow.stage import run_stage
from dermflow.training.batches import ImageTensor
from dermflow.training.determinism import (
    CUBLAS_VAR,
    Determinism,
    DeterminismError,
    set_deterministic,
)
from dermflow.training.distributed import rank_world, run_distributed
from dermflow.training.loop import fit

SRC = Path(__file__).resolve().parents[1] / "src"
CPU = torch.device("cpu")
CFG = train_config(epochs=2, batch_size=8, lr=1e-2, augment=True, seed=3)


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


def test_two_gloo_processes_match_one(tmp_path, monkeypatch):
    """Also where the machine has CUDA: the job claimed the CPU, so its ranks talk gloo."""
    single = train()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    run_distributed(_rank, 2, tmp_path / "ddp.pt", device=CPU)
    ddp = torch.load(tmp_path / "ddp.pt")
    for name, value in single.items():
        assert torch.allclose(value, ddp[name], atol=1e-5), name
    assert (tmp_path / "ddp.ckpt").is_file()  # written by rank 0 only, once per epoch


def test_global_batch_must_split_evenly(tmp_path):
    with pytest.raises(Exception, match="does not split over 2 GPUs"):
        run_distributed(_odd_batch, 2, device=CPU)


def _odd_batch(rank: int) -> None:
    data = ImageTensor(np.zeros((4, 8, 8, 3), np.uint8), np.zeros(4, int), torch.device("cpu"),
                       (0.5,) * 3, (0.5,) * 3)
    fit(Tiny(), data, np.arange(4), np.arange(4), train_config(epochs=1, batch_size=3))


RANKS = """\
from pathlib import Path


def record(rank: int, out: str) -> None:
    Path(out, f"rank{rank}").write_text("trained")
"""

SCRIPT = """\
import ranks
import torch
from dermflow.training.distributed import run_distributed

run_distributed(ranks.record, 2, snakemake.output[0], device=torch.device("cpu"))
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


def test_a_user_error_in_a_worker_is_raised_as_itself(monkeypatch):
    """deterministic: true reaches the workers, and an op without a deterministic kernel is
    the config's problem, reported in one line, not a worker's traceback."""
    monkeypatch.delenv(CUBLAS_VAR, raising=False)  # set_deterministic sets it; undone after
    before = Determinism.current()
    try:
        set_deterministic(True)
        with pytest.raises(DeterminismError, match=r"deterministic: true, but put_ has no "):
            run_distributed(_nondeterministic_op, 2, device=CPU)
    finally:
        before.apply()


def dermflow_errors() -> list[type[DermflowError]]:
    """Every DermflowError subclass dermflow defines (its modules that subclass an error
    imported first, so none is missed)."""
    for path in sorted((SRC / "dermflow").rglob("*.py")):
        classes = [node for node in ast.parse(path.read_text()).body
                   if isinstance(node, ast.ClassDef)]
        if any(isinstance(base, ast.Name) and base.id.endswith("Error")
               for node in classes for base in node.bases):
            importlib.import_module(".".join(path.relative_to(SRC).with_suffix("").parts))
    found, todo = [], [DermflowError]
    while todo:
        cls = todo.pop()
        found.append(cls)
        todo.extend(cls.__subclasses__())
    return found


def test_every_dermflow_error_survives_the_trip_from_a_worker():
    """A rank's error reaches the job pickled, whatever its __init__ takes."""
    errors = dermflow_errors()
    assert {"DamagedFileError", "DeviceError", "OutputsBusyError"} <= {c.__name__ for c in errors}
    for cls in errors:
        init = cls.__init__
        required = [p.name for p in list(inspect.signature(init).parameters.values())[1:]
                    if p.default is p.empty] if inspect.isfunction(init) else ["message"]
        err = cls(*(f"{name} of a {cls.__name__}" for name in required))
        back = pickle.loads(pickle.dumps(err))
        assert type(back) is cls and str(back) == str(err) and back.__dict__ == err.__dict__


def _fail_as_rank(rank: int, log_file: str, formatter: logging.Formatter, path: str,
                  kind: str) -> None:
    """Rank 0 logs as the job (as a classifier's rank 0 does), then fails as users' runs do."""
    if rank == 1:
        return
    log_as_job(log_file, formatter)
    logging.getLogger("dermflow.experiments.classifier").info("epoch 1 of rank %d", rank)
    if kind == "damaged":
        raise DamagedFileError(Path(path), "truncated", "rebuild it")
    raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), path)


@pytest.mark.parametrize(("kind", "message"), [
    ("damaged", "{path}: truncated; rebuild it"),
    ("refused", "permission denied: {path}: let this user read and write it"),
])
def test_a_ranks_user_error_ends_the_job_in_one_line_after_its_lines(tmp_path, capfd, kind,
                                                                     message):
    """What rank 0 logged stays in the job's log (the job's own later lines are appended
    after it, not written over it) and on the console, tagged as the job's lines are; its
    damaged checkpoint or refused file is the job's one-line error."""
    path = tmp_path / "results/checkpoints/single.pt"
    smk = SimpleNamespace(rule="train_classifier", log=[str(tmp_path / "logs/train.log")],
                          output=[str(tmp_path / "results/model.pt")], config={}, params={},
                          resources={}, wildcards={"experiment": "none_50%", "fold": "1",
                                                   "seed": "2"})
    with pytest.raises(SystemExit), run_stage(smk) as logger:
        logger.info("DistributedDataParallel over 2 CPU processes")
        run_distributed(_fail_as_rank, 2, smk.log[0], job_formatter(), str(path), kind,
                        device=CPU)
    lines = Path(smk.log[0]).read_text().splitlines()
    tag = "[none_50% fold=1 seed=2] dermflow."
    assert len(lines) == 3 and all(tag in line for line in lines), lines
    assert "DistributedDataParallel" in lines[0] and "epoch 1 of rank 0" in lines[1]
    assert " ERROR " in lines[2] and message.format(path=path) in lines[2]
    assert f"{tag}experiments.classifier: epoch 1 of rank 0" in capfd.readouterr().err


RANKS_WAIT = """\
import os
from pathlib import Path

import torch
import torch.distributed as dist


def wait(rank: int, out: str) -> None:
    Path(out, f"rank{rank}.pid").write_text(str(os.getpid()))
    dist.recv(torch.zeros(1), src=1 - rank)  # waits in gloo (C++) for a peer, as ranks do
"""

PARENT = """\
import sys
import torch
import ranks_wait
from dermflow.training.distributed import run_distributed

run_distributed(ranks_wait.wait, 2, sys.argv[1], device=torch.device("cpu"))
"""


def _running(pid: int) -> bool:
    """Whether ``pid`` still runs (an exited process no one reaped yet does not)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_no_worker_outlives_a_killed_job(tmp_path, sig):
    """Snakemake cancels a job with SIGTERM: the job stops its ranks before it ends (its
    GPU locks end with it). Killed outright (SIGKILL, out of memory), the ranks follow,
    even while they wait in C++ for each other (where SIGINT, torch's own parent-death
    signal, is never acted on)."""
    (tmp_path / "ranks_wait.py").write_text(RANKS_WAIT)
    (tmp_path / "parent.py").write_text(PARENT)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(SRC)])}
    job = subprocess.Popen([sys.executable, str(tmp_path / "parent.py"), str(tmp_path)],
                           cwd=tmp_path, env=env, stderr=subprocess.PIPE, text=True)
    pids: list[int] = []
    try:
        deadline = time.monotonic() + 120
        while len(pids) < 2:
            assert job.poll() is None and time.monotonic() < deadline, "the ranks did not start"
            time.sleep(0.1)
            pids = [int(p.read_text()) for p in tmp_path.glob("rank*.pid") if p.read_text()]
        job.send_signal(sig)
        job.wait(60)
        if sig == signal.SIGTERM:
            assert job.returncode == 128 + sig, job.stderr.read()[-2000:]  # it unwound
        else:
            deadline = time.monotonic() + 20
            while any(map(_running, pids)) and time.monotonic() < deadline:
                time.sleep(0.1)
        assert not [pid for pid in pids if _running(pid)], "a rank outlived its job"
    finally:
        job.kill()
        job.wait()
        for pid in pids:
            if _running(pid):
                os.kill(pid, signal.SIGKILL)
