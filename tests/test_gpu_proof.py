"""The GPU proof kit (benchmarks/gpu_proof.py) on the CPU: its profiles plan the DAG the
issue asks for, and its --smoke course runs every step, resumes a stopped DAG and leaves
what RESULTS.md needs in one folder (the course is conftest's smoke_course, shared with the
paper-protocol test)."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import pytest
from conftest import SmokeCourse, copy_workflow, planned_jobs

pytestmark = pytest.mark.workflow


def test_gpu_quick_profiles_plan_the_default_experiments_and_the_paper_protocol(tmp_path: Path,
                                                               tiny_dataset: Path) -> None:
    work = copy_workflow(tmp_path / "w")
    data = f"dataset={{source: local, path: {tiny_dataset}}}"
    quick = planned_jobs(work, "--profile", "profiles/gpu-quick", "--config", data)
    # Table 5's five experiments and the strong baseline
    assert quick["train_classifier"] == quick["predict"] == quick["evaluate"] == 6
    assert quick["build_augmented_dataset"] == quick["report"] == 1
    lend = planned_jobs(work, "--profile", "profiles/gpu-quick", "--configfile", "config.yaml",
                        "profiles/gpu-quick/gpu-quick.yaml", "profiles/gpu-quick/lend.yaml",
                        "--config", data)
    assert lend == quick
    paper = planned_jobs(work, "--profile", "profiles/gpu-quick-paper", "--config", data)
    assert paper["train_classifier"] == paper["train_gan"] == paper["report"] == 1
    assert (work / "results/protocol-paper/.snakemake").is_dir()  # its own working folder


def test_a_stopped_course_keeps_its_state_and_collects(smoke_course: SmokeCourse) -> None:
    # the first call, stopped by SIGTERM once the split was made: the kit stops Snakemake,
    # keeps its state and collects
    assert smoke_course.first.returncode == 2, smoke_course.first.stdout
    assert smoke_course.first_state["steps"]["dag-quick"]["status"] == "stopped"
    assert smoke_course.first_summary


def test_the_next_call_resumes_and_collects(smoke_course: SmokeCourse) -> None:
    # second call, as on a lent GPU: the DAGs beside the GPU tests (the first resumed where
    # it stopped), their GPU jobs two at a time, then the benchmarks alone
    work, second = smoke_course.work, smoke_course.second
    assert second.returncode == 0, second.stdout + second.stderr
    state = json.loads((work / ".gpu-proof/state.json").read_text())
    for name, record in state["steps"].items():
        wanted = "skipped (CPU smoke)" if "compiled" in name or name == "bench-gan-bf16" \
            else "done"
        assert record["status"] == wanted, (name, record)
    assert state["steps"]["dag-quick"]["calls"] == 2
    assert state["steps"]["dag-paper"]["beside"] == "gpu-tests"
    dag_log = (work / ".gpu-proof/logs/dag-quick.txt").read_text()
    assert "--unlock" in dag_log
    assert "2 GPU(s) here (DERMFLOW_GPU_COUNT=2)" in dag_log

    out = sorted(p.name for p in (work / "out").iterdir())
    assert out == ["figures.tar.gz", "kit.log", "logs.tar.gz", "summary.md", "tables.tar.gz"]
    assert all((work / "out" / name).stat().st_size < 16 * 2**20 for name in out)
    summary = (work / "out/summary.md").read_text()
    for text in ("## GPU tests", "8 skipped", "| resnet18 | 4 | 32 |", "| 0.1M / 0.0M |",
                 "| resnet50v2_deit | 4 | 32 |", "train_classifier_cgan_resnet50v2_deit",
                 "# Results (protocol: grouped)", "# Results (protocol: paper)",
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
