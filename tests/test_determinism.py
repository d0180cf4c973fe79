"""deterministic: the switches a job sets before it touches CUDA, and the error it reports."""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from dermflow.gpustage import gpu_stage
from dermflow.training.determinism import CUBLAS_VAR, Determinism, set_deterministic


@pytest.fixture(autouse=True)
def torch_defaults(monkeypatch: pytest.MonkeyPatch):
    """Each test starts from torch's defaults and leaves them as it found them."""
    monkeypatch.delenv(CUBLAS_VAR, raising=False)
    before = Determinism.current()
    Determinism(False, False, False).apply()
    yield
    before.apply()


def job(tmp_path: Path, deterministic: bool) -> SimpleNamespace:
    """What gpu_stage reads of Snakemake's ``snakemake`` object: a CPU job."""
    return SimpleNamespace(rule="train_classifier", log=[str(tmp_path / "train.log")],
                           output=[str(tmp_path / "model.pt")], threads=1,
                           config={"deterministic": deterministic}, params={},
                           resources={"gpu": 0}, wildcards={})


def test_deterministic_job_switches_on_reproducible_kernels(tmp_path: Path):
    with gpu_stage(job(tmp_path, True)):
        assert torch.are_deterministic_algorithms_enabled()
        assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
        assert os.environ[CUBLAS_VAR] == ":4096:8"


def test_default_job_leaves_torch_as_it_is(tmp_path: Path):
    with gpu_stage(job(tmp_path, False)):
        assert not torch.are_deterministic_algorithms_enabled()
        assert not torch.backends.cudnn.deterministic
        assert CUBLAS_VAR not in os.environ


def test_users_deterministic_cublas_setting_is_kept(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv(CUBLAS_VAR, ":16:8")  # the smaller of cuBLAS's two deterministic ones
    set_deterministic(True)
    assert os.environ[CUBLAS_VAR] == ":16:8"
    monkeypatch.setenv(CUBLAS_VAR, ":0:0")
    set_deterministic(True)
    assert os.environ[CUBLAS_VAR] == ":4096:8"


def test_an_op_without_a_deterministic_kernel_fails_the_job_in_one_line(tmp_path: Path):
    smk = job(tmp_path, True)
    with pytest.raises(SystemExit), gpu_stage(smk):
        torch.zeros(3).put_(torch.tensor([0, 0]), torch.ones(2))
    log = (tmp_path / "train.log").read_text()
    assert "deterministic: true, but put_ has no deterministic kernel" in log
    assert "Traceback" not in log
