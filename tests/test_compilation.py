"""compile: auto | true decided before training, from what compiling needs and one compiled op."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch

import dermflow.training.compilation as compilation
from dermflow.training.compilation import CompileError, resolve_compile

CUDA = torch.device("cuda", 0)
CPU = torch.device("cpu")


@pytest.fixture(autouse=True)
def fresh_decisions():
    """Each test decides anew (a job decides once per process)."""
    compilation.compile_problem.cache_clear()
    compilation._fall_back.cache_clear()
    yield
    compilation.compile_problem.cache_clear()


@pytest.fixture
def bare_machine(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No compiler on PATH, no Python headers, no Triton: a slim CUDA image."""
    for var in ("CC", "CXX"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(compilation, "python_headers", lambda: tmp_path / "Python.h")
    monkeypatch.setattr(compilation, "has_triton", lambda: False)
    monkeypatch.setattr(torch, "compile", lambda fn: pytest.fail("compiled without a compiler"))


def test_auto_falls_back_to_eager_naming_what_is_missing(bare_machine, caplog):
    with caplog.at_level(logging.WARNING):
        assert resolve_compile("auto", CUDA) is False
        assert resolve_compile("auto", CUDA) is False  # the next stage of the job: said once
    (record,) = caplog.records
    for needed in ("Triton", "a C compiler (gcc or clang on PATH, or CC)", "Python's headers",
                   "training in eager mode"):
        assert needed in record.getMessage()


def test_true_fails_before_training_naming_the_key_and_what_is_missing(bare_machine):
    with pytest.raises(CompileError, match=r"baseline.compile: true, but .*a C\+\+ compiler "
                                           r"\(g\+\+ or clang\+\+ on PATH, or CXX\)"):
        resolve_compile(True, CPU, "baseline.compile")


def test_a_backend_that_fails_on_a_one_op_function_is_caught(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(compilation, "missing", lambda device: [])

    def broken(fn):
        def run(x):
            raise RuntimeError("InductorError: ld: cannot find -lcuda\nmore")
        return run

    monkeypatch.setattr(torch, "compile", broken)
    with pytest.raises(CompileError, match="compiling a test function failed: RuntimeError: "
                                           r"InductorError: ld: cannot find -lcuda\)"):
        resolve_compile(True, CPU)
    assert resolve_compile("auto", CPU) is False  # auto never compiles on the CPU


def test_false_and_auto_on_the_cpu_check_nothing(bare_machine):
    assert resolve_compile(False, CUDA) is False
    assert resolve_compile("auto", CPU) is False
