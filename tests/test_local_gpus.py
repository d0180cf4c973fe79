"""`snakemake --resources gpu=2` with dermflow's claim: two GPU jobs at once, never on one GPU;
and one job on two GPUs through the real rule."""

from __future__ import annotations

import json
import re
import shutil
import sys
from pathlib import Path

import pytest
import torch
import yaml
from conftest import REPO, demo_args, snakemake

pytestmark = pytest.mark.workflow
DEMO = yaml.safe_load((REPO / "profiles/demo/demo.yaml").read_text())

# The job imports this checkout's dermflow, whichever one is installed.
JOB = f"sys_path = {str(REPO / 'src')!r}\n" + """\
import json, sys, time
sys.path.insert(0, sys_path)
from dermflow.training.device import claim_gpus
with claim_gpus(1, device_count=2, lock_dir=sys.argv[2]) as claim:
    start = time.time()
    time.sleep(1.5)
    record = {"gpu": claim.physical[0], "start": start, "end": time.time()}
open(sys.argv[1], "w").write(json.dumps(record))
"""


def test_gpu_resource_caps_jobs_and_claims_keep_them_apart(tmp_path: Path):
    (tmp_path / "job.py").write_text(JOB)
    (tmp_path / "Snakefile").write_text(f"""
rule all:
    input: expand("out/{{i}}.json", i=range(6))

rule gpu_job:
    output: "out/{{i}}.json"
    resources: gpu=1
    shell: "{sys.executable} job.py {{output}} {tmp_path / 'locks'}"
""")
    snakemake(tmp_path, "--cores", "6", "--resources", "gpu=2")
    jobs = [json.loads(p.read_text()) for p in sorted((tmp_path / "out").glob("*.json"))]
    assert len(jobs) == 6
    moments = sorted({j["start"] for j in jobs} | {j["end"] - 1e-6 for j in jobs})
    running = [[j for j in jobs if j["start"] <= t < j["end"]] for t in moments]
    assert max(len(r) for r in running) == 2  # two at a time with 6 cores free: never three
    for together in running:
        assert len({j["gpu"] for j in together}) == len(together)


TIMED_JOB = """\
import json, sys, time
start = time.time()
time.sleep(1)
open(sys.argv[1], "w").write(json.dumps({"start": start, "end": time.time()}))
"""


@pytest.mark.parametrize("resources", [["--resources", "gpu=2"], []])
def test_gpu_jobs_are_capped_at_the_gpus_present(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                  resources: list[str]) -> None:
    """One GPU (faked) and `--resources gpu=2` (or no limit): one GPU job at a time, said once."""
    monkeypatch.setenv("DERMFLOW_GPU_COUNT", "1")
    (tmp_path / "job.py").write_text(TIMED_JOB)
    (tmp_path / "Snakefile").write_text(f"""
import sys
sys.path.insert(0, {str(REPO / "src")!r})
from snakemake.logging import logger
from dermflow.jobenv import limit_gpu_jobs

note = limit_gpu_jobs(workflow)  # as workflow/rules/common.smk does
if note:
    logger.info(note)

rule all:
    input: expand("out/{{i}}.json", i=range(3))

rule gpu_job:
    output: "out/{{i}}.json"
    resources: gpu=1
    shell: "{sys.executable} job.py {{output}}"
""")
    proc = snakemake(tmp_path, "--cores", "3", *resources)
    log = proc.stdout + proc.stderr
    assert log.count("dermflow: 1 GPU(s) here (DERMFLOW_GPU_COUNT=1)") == 1
    assert re.search(r'Provided resources: gpu=(Resource\("gpu", )?1\b', log)  # Snakemake 8/9
    jobs = sorted((json.loads(p.read_text()) for p in (tmp_path / "out").glob("*.json")),
                  key=lambda j: j["start"])
    assert len(jobs) == 3
    assert all(a["end"] <= b["start"] for a, b in zip(jobs, jobs[1:], strict=False)), (
        "two GPU jobs at once")


# What the demo run made that no train_classifier job of the `none` balance reads.
NOT_UPSTREAM = {"experiments", "checkpoints", "baseline", "attention", "gan", "synthetic",
                "report"}


def test_classifier_on_two_gpus_trains_through_the_rule(demo_run: Path, tmp_path: Path):
    """classifier.gpus: 2 from the real rule: the job starts two DDP workers (on the CPU,
    gloo; on GPUs, NCCL: the same launch) that do not re-run the rule's script, and rank 0
    writes the model and logs as the job, to its log and the console. The cheapest
    registered model (ResNet-18, one epoch) on the demo's `none` dataset, its job alone,
    in a copy of the demo run without what that job does not read."""
    name = "none_resnet18"
    workdir = tmp_path / "w"
    results = demo_run / "results"
    shutil.copytree(demo_run, workdir, symlinks=True, ignore=lambda folder, names: (
        NOT_UPSTREAM & set(names) if Path(folder) == results else set()))
    experiments = [*DEMO["experiments"], {"name": name, "balance": "none", "model": "resnet18",
                                          "overrides": {"gpus": 2, "epochs": 1}}]
    (workdir / "ddp.yaml").write_text(yaml.safe_dump({"experiments": experiments}))
    model = f"results/experiments/{name}/model.pt"
    proc = snakemake(workdir, model, *demo_args("ddp.yaml"))
    assert "NameError" not in proc.stderr
    assert "train_classifier" in proc.stderr and "build_dataset" not in proc.stderr, (
        "the copy lacks an input of the job")
    log = (workdir / f"logs/train_classifier_{name}.log").read_text()
    assert "DistributedDataParallel over 2 CPU processes (gloo)" in log
    rank0 = f"[{name}] dermflow.experiments.classifier: {name}: resnet18 ("
    assert rank0 in log and rank0 in proc.stderr
    metrics = json.loads((workdir / f"results/experiments/{name}/metrics.json").read_text())
    assert metrics["best_epoch"] == 1 and metrics["train_config"]["epochs"] == 1
    assert torch.load(workdir / model, weights_only=False)["state_dict"]
