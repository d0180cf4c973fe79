"""The GPU proof kit (benchmarks/gpu_proof.py): how it plans a call within its budget, what
it leaves in --out after each step, and what it does without a compiler or a test runner
(unit tests, fake steps); and on the CPU, its profiles plan the default experiments and the
paper protocol, and its --smoke course runs every step, resumes a stopped DAG and leaves
what RESULTS.md needs in one folder (the course is conftest's smoke_course, shared with the
paper-protocol test)."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import re
import shutil
import sys
import sysconfig
import tarfile
import time
from importlib.metadata import requires
from pathlib import Path
from types import ModuleType

import pytest
from conftest import REPO, SmokeCourse, copy_workflow, planned_jobs
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

import dermflow.training.compilation as compilation


@pytest.fixture
def kit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """A fresh copy of the kit's module, its state folder in tmp_path."""
    spec = importlib.util.spec_from_file_location("gpu_proof", REPO / "benchmarks/gpu_proof.py")
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)  # its dataclasses look themselves up
    spec.loader.exec_module(module)
    module.use_work(tmp_path / "work")
    return module


def kit_args(kit: ModuleType, tmp_path: Path, *argv: str):
    return kit.parse_args(["--out", str(tmp_path / "out"), *argv])


def fake(kit: ModuleType, name: str, estimate: float = 1.0, code: str = "pass", **fields):
    """A step that runs ``code`` in Python."""
    return kit.Step(name, [sys.executable, "-c", code], estimate, **fields)


def summary(tmp_path: Path) -> str:
    return (tmp_path / "out/summary.md").read_text()


def test_steps_that_do_not_fit_the_budget_wait_for_a_later_call(kit, tmp_path: Path) -> None:
    todo = [fake(kit, "small"), fake(kit, "large", estimate=500), fake(kit, "tail")]
    state = kit.load_state()
    kit.run_steps(kit_args(kit, tmp_path, "--budget", str(kit.RESERVE + 30)), state, todo,
                  time.monotonic())
    records = state["steps"]
    assert records["small"]["status"] == records["tail"]["status"] == "done"
    assert records["large"]["status"] == "skipped: budget"
    assert "needs ~500 s" in records["large"]["reason"]
    assert "| large | skipped: budget | 0 | 0 | needs ~500 s" in summary(tmp_path)
    # a later call with the time for it runs what was skipped, and only that
    kit.run_steps(kit_args(kit, tmp_path, "--budget", "1000"), state, todo, time.monotonic())
    assert records["large"]["status"] == "done"
    assert records["small"]["calls"] == records["large"]["calls"] == 1


def test_a_dag_starts_with_less_than_its_estimate_and_stops_at_the_budget(
        kit, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kit, "RESERVE", 0.0)
    monkeypatch.setattr(kit, "DAG_MINIMUM", 1.0)
    dag = fake(kit, "dag-quick", 500, "import time; time.sleep(60)", dag="quick")
    state = kit.load_state()
    begun = time.monotonic()
    kit.run_steps(kit_args(kit, tmp_path, "--budget", "2"), state, [dag], begun)
    assert time.monotonic() - begun < 30
    assert state["steps"]["dag-quick"]["status"] == "stopped"  # the next call resumes it
    assert state["steps"]["dag-quick"]["calls"] == 1


def test_each_finished_step_is_in_the_output_folder_before_the_next_one_ends(
        kit, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    launch = kit.launch

    def machine_stops_during_second(step, env):
        if step.name == "second":
            raise RuntimeError("the machine stopped")
        return launch(step, env)

    monkeypatch.setattr(kit, "launch", machine_stops_during_second)
    with pytest.raises(RuntimeError):
        kit.run_steps(kit_args(kit, tmp_path), kit.load_state(),
                      [fake(kit, "first"), fake(kit, "second")],
                      time.monotonic())
    assert "| first | done |" in summary(tmp_path)
    with tarfile.open(tmp_path / "out/tables.tar.gz") as tar:
        assert "kit/first.txt" in tar.getnames()
    assert not list((tmp_path / "out").glob(".*"))  # no half-written file left behind


def test_without_triton_a_c_compiler_or_python_h_the_compiled_steps_are_skipped(
        kit, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The kit asks what training asks before it compiles (dermflow.training.compilation)."""
    monkeypatch.delenv("CC", raising=False)
    monkeypatch.setattr(shutil, "which", lambda name: None)
    monkeypatch.setattr(compilation, "has_triton", lambda: False)

    def compiled_step() -> dict:
        state = kit.load_state()
        kit.run_steps(kit_args(kit, tmp_path), state,
                      [fake(kit, "bench"), fake(kit, "bench-compiled", compiled=True)],
                      time.monotonic())
        assert state["steps"]["bench"]["status"] == "done"
        return state["steps"]["bench-compiled"]

    assert "C compiler" in kit.compile_missing()
    compiled = compiled_step()
    assert compiled["status"] == "skipped: compile prerequisites"
    assert "C compiler" in compiled["reason"] and compiled["calls"] == 0

    monkeypatch.setattr(shutil, "which", lambda name: f"/usr/bin/{name}")
    monkeypatch.setattr(sysconfig, "get_paths", lambda scheme=None: {"include": str(tmp_path)})
    assert str(tmp_path / "Python.h") in kit.compile_missing()
    (tmp_path / "Python.h").write_text("")
    # a compiler and Python.h, but no Triton (a CUDA torch without its triton wheel)
    assert kit.compile_missing() == "torch.compile needs Triton (pip install triton)"
    compiled = compiled_step()
    assert compiled["status"] == "skipped: compile prerequisites"
    assert compiled["reason"] == "torch.compile needs Triton (pip install triton)"
    monkeypatch.setattr(compilation, "has_triton", lambda: True)
    assert kit.compile_missing() is None

    # the GPU tests leave out their torch.compile test, which tests/test_gpu.py still has
    tests = next(s for s in kit.steps(kit_args(kit, tmp_path), "full", "no C compiler")
                 if s.name == "gpu-tests")
    assert f"cuda and not {kit.COMPILE_TESTS}" in tests.command
    assert f"def {kit.COMPILE_TESTS}" in (REPO / "tests/test_gpu.py").read_text()


def test_a_missing_test_runner_fails_the_gpu_tests(kit, tmp_path: Path) -> None:
    args = kit_args(kit, tmp_path)
    tests = next(s for s in kit.steps(args, "full") if s.name == "gpu-tests")
    absent = dataclasses.replace(tests, command=[
        "no_such_runner" if part == "pytest" else part for part in tests.command])
    state = kit.load_state()
    kit.run_steps(args, state, [absent], time.monotonic())
    record = state["steps"]["gpu-tests"]
    assert record["status"] == "failed", record
    assert "No module named no_such_runner" in record["reason"]


def test_failing_gpu_tests_show_in_the_steps_and_are_retried(kit, tmp_path: Path) -> None:
    """A runner that ran and reported failing tests is not plain 'done': the step table
    says how many failed, and --retry runs it again, as it does a failed step."""
    report = tmp_path / "report.xml"
    xml = '<testsuites><testsuite tests="5" failures="2" errors="1"/></testsuites>'
    failing = fake(kit, "gpu-tests", code=f"open({str(report)!r}, 'w').write({xml!r});"
                   "raise SystemExit(1)", report=report)
    state = kit.load_state()
    kit.run_steps(kit_args(kit, tmp_path), state, [failing], time.monotonic())
    record = state["steps"]["gpu-tests"]
    assert record["status"] == "done: 3 failed", record
    assert "| gpu-tests | done: 3 failed (exit 1) |" in summary(tmp_path)

    kit.run_steps(kit_args(kit, tmp_path), state, [failing], time.monotonic())
    assert record["calls"] == 1  # kept without --retry
    kit.run_steps(kit_args(kit, tmp_path, "--retry"), state, [failing], time.monotonic())
    assert record["calls"] == 2


def test_the_wheel_set_carries_the_test_runner_and_its_needs() -> None:
    script = (REPO / "benchmarks/gpu_wheels.sh").read_text()
    block = script.split("\nWHEELS=(", 1)[1].split("\n)", 1)[0]
    carried = {canonicalize_name(line.split("#")[0].split("==")[0].strip())
               for line in block.splitlines() if "==" in line.split("#")[0]}
    machine = {canonicalize_name(item.split("==")[0])
               for item in re.search(r'MACHINE_HAS="([^"]*)"', script)[1].split()}
    assert "pytest" in carried
    linux312 = {"python_version": "3.12", "python_full_version": "3.12.3", "os_name": "posix",
                "sys_platform": "linux", "platform_system": "Linux", "extra": ""}
    for line in requires("pytest"):
        need = Requirement(line)
        if need.marker is None or need.marker.evaluate(linux312):
            assert canonicalize_name(need.name) in carried | machine, line


@pytest.mark.workflow
def test_gpu_quick_profiles_plan_the_default_experiments_and_the_paper_protocol(tmp_path: Path,
                                                               tiny_dataset: Path) -> None:
    work = copy_workflow(tmp_path / "w")
    data = f"dataset={{source: local, path: {tiny_dataset}}}"
    quick = planned_jobs(work, "--profile", "profiles/gpu-quick", "--config", data)
    # Table 5's five experiments and the strong baseline
    assert quick["train_classifier"] == quick["predict"] == quick["evaluate"] == 6
    assert quick["build_augmented_dataset"] == quick["report"] == 1
    short = planned_jobs(work, "--profile", "profiles/gpu-quick", "--configfile", "config.yaml",
                         "profiles/gpu-quick/gpu-quick.yaml", "profiles/gpu-quick/short.yaml",
                         "--config", data)
    assert short == quick
    paper = planned_jobs(work, "--profile", "profiles/gpu-quick-paper", "--config", data)
    assert paper["train_classifier"] == paper["train_gan"] == paper["report"] == 1
    assert (work / "results/protocol-paper/.snakemake").is_dir()  # its own working folder


@pytest.mark.workflow
def test_a_stopped_course_keeps_its_state_and_collects(smoke_course: SmokeCourse) -> None:
    # the first call, stopped by SIGTERM once the split was made: the kit stops Snakemake,
    # keeps its state and collects
    assert smoke_course.first.returncode == 2, smoke_course.first.stdout
    assert smoke_course.first_state["steps"]["dag-quick"]["status"] == "stopped"
    assert smoke_course.first_summary


@pytest.mark.workflow
def test_the_next_call_resumes_and_collects(smoke_course: SmokeCourse) -> None:
    # second call, within a budget: the benchmarks alone first, then the DAGs beside the GPU
    # tests (the first resumed where it stopped), their GPU jobs two at a time
    work, second = smoke_course.work, smoke_course.second
    assert second.returncode == 0, second.stdout + second.stderr
    state = json.loads((work / ".gpu-proof/state.json").read_text())
    for name, record in state["steps"].items():
        wanted = "skipped: CPU smoke" if "compiled" in name or name == "bench-gan-bf16" \
            else "done"
        assert record["status"] == wanted, (name, record)
    assert state["course"] == "short"
    assert state["steps"]["dag-quick"]["calls"] == 2
    assert state["steps"]["dag-paper"]["beside"] == "gpu-tests"
    call = (work / "out/kit.log").read_text().split("call 2:", 1)[1]
    assert call.index("bench-classifier: finished") < call.index("dag-quick: running beside")
    dag_log = (work / ".gpu-proof/logs/dag-quick.txt").read_text()
    assert "--unlock" in dag_log
    assert "2 GPU(s) here (DERMFLOW_GPU_COUNT=2)" in dag_log

    out = sorted(p.name for p in (work / "out").iterdir())
    assert out == ["figures.tar.gz", "kit.log", "logs.tar.gz", "summary.md", "tables.tar.gz"]
    summary = (work / "out/summary.md").read_text()
    cuda_tests = re.search(r"(\d+) tests, 0 failed, 0 errors, (\d+) skipped", summary)
    assert cuda_tests and cuda_tests[1] == cuda_tests[2] != "0"  # no CUDA: each one skipped
    for text in ("## GPU tests", "| resnet18 | 4 | 32 |", "| 0.1M / 0.0M |",
                 "| resnet50v2_deit | 4 | 32 |", "train_classifier_cgan_resnet50v2_deit",
                 "Data: generated demo images (not real lesions), 32 px, grouped;",
                 "Data: generated demo images (not real lesions), 32 px, paper;",
                 "| grouped |", "| paper |"):
        assert text in summary, text
    with tarfile.open(work / "out/tables.tar.gz") as tar:
        names = set(tar.getnames())
        leakage = json.load(tar.extractfile("paper/results/report/leakage.json"))
    for name in ("quick/results/benchmarks/train_baseline.tsv", "quick/results/report/ablation.md",
                 "quick/results/synthetic/quality.json", "paper/results/report/comparisons.csv",
                 "kit/gpu-tests.xml", "kit/env.json", "kit/bench-gan-fp32.txt"):
        assert name in names, name
    assert leakage["protocol"] == "paper"  # the paper split's synthetic images reach val/test
    assert leakage["datasets"]["cgan"]["non_real_in_val_test"] > 0
