"""profiles/slurm as snakemake-executor-plugin-slurm reads it (one task per job, GPUs
through the ``gpu`` resource); and the demo DAG, up to its predictions, on a real
single-node SLURM cluster (Debian's slurm-wlm and munge).

The fixture starts munged, slurmctld and slurmd in the foreground (no systemd),
with two fake GPU device nodes for gres, and stops everything it started. The
test submits the DAG through profiles/slurm and checks that every job went
through sbatch and that GPU jobs running at the same time got different
CUDA_VISIBLE_DEVICES from SLURM.
"""

from __future__ import annotations

import itertools
import os
import re
import shutil
import socket
import subprocess
import time
from datetime import datetime
from pathlib import Path

import pytest
import yaml
from conftest import REPO, copy_workflow, snakemake, with_weights

DAEMONS = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "sinfo", "scancel")
SYSTEM_CONF = Path("/etc/slurm")  # where srun inside a job looks (SLURM_CONF does not reach it)
GPU_RULES = ("train_baseline", "extract_attention", "train_gan", "generate_synthetic",
             "check_synthetic", "train_classifier", "predict")
PROFILE = REPO / "profiles/slurm/config.yaml"
RULE = re.compile(r"^\s*rule (\w+):$", re.MULTILINE)


def rule_texts() -> dict[str, str]:
    """Each rule of workflow/rules and its text, up to the next rule."""
    texts = {}
    for smk in sorted((REPO / "workflow/rules").glob("*.smk")):
        parts = RULE.split(smk.read_text())
        texts.update(zip(parts[1::2], parts[2::2], strict=True))
    return texts


def profile_resources() -> dict[str, dict]:
    """The resources profiles/slurm gives each rule: its defaults, then its set-resources."""
    profile = yaml.safe_load(PROFILE.read_text())
    rules, workflow = profile["set-resources"], rule_texts()
    assert set(rules) <= set(workflow), "set-resources names a rule the workflow lacks"
    return {rule: {**profile["default-resources"], **rules.get(rule, {})} for rule in workflow}


def test_every_slurm_job_is_one_task():
    """The plugin's srun runs a job's script once per task: a rule of two tasks runs twice,
    and on a GPU rule ``tasks`` or ``tasks_per_gpu`` becomes ``--ntasks-per-gpu``, one task
    per GPU, so a 2-GPU train_classifier would train twice, each run starting its own DDP
    workers. A job on several GPUs must be one process."""
    resources = profile_resources()
    assert set(GPU_RULES) < set(resources)
    for rule, asked in resources.items():
        assert not {"tasks_per_gpu", "tasks_per_node", "ntasks", "mpi"} & set(asked), rule
        assert int(asked.get("tasks", 1)) == 1 and int(asked.get("nodes", 1)) == 1, rule
        assert rule not in GPU_RULES or "tasks" not in asked, rule
        assert not re.search(r"(^|\s)(-n|--ntasks)", str(asked.get("slurm_extra", ""))), rule


def test_gpu_rules_ask_for_their_gpus_through_the_gpu_resource():
    """As the README's SLURM section says: the rules that run a network declare ``gpu``
    (train_classifier: classifier.gpus), which the plugin turns into ``--gpus=N``; the profile
    gives them ``cpus_per_gpu``, memory and runtime, and overrides no GPU count."""
    texts = rule_texts()
    assert {rule for rule, text in texts.items() if re.search(r"^\s+gpu=", text, re.M)} \
        == set(GPU_RULES)
    assert '["gpus"]' in re.search(r"^\s+gpu=(.*)$", texts["train_classifier"], re.M)[1]
    for rule, asked in profile_resources().items():
        assert not {"gpu", "gpus", "gres"} & set(asked), rule
        assert not re.search(r"--gpus|--gres|(^|\s)-G", str(asked.get("slurm_extra", ""))), rule
        if rule in GPU_RULES:
            assert {"cpus_per_gpu", "mem_mb", "runtime"} <= set(asked), rule
        else:
            assert "cpus_per_gpu" not in asked, rule


def unavailable() -> str | None:
    """Why a SLURM cluster cannot be started here, or None."""
    if os.geteuid() != 0:
        return "needs root (starts munged/slurmctld/slurmd and makes device nodes)"
    missing = [name for name in DAEMONS if shutil.which(name) is None]
    if missing:
        return f"needs Debian's slurm-wlm and munge packages ({', '.join(missing)} not found)"
    if not Path("/etc/munge/munge.key").is_file():
        return "needs a munge key (/etc/munge/munge.key)"
    if any((SYSTEM_CONF / name).exists() for name in ("slurm.conf", "gres.conf")):
        return f"{SYSTEM_CONF} already holds a SLURM configuration, which this test leaves alone"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_config(root: Path) -> Path:
    """slurm.conf + gres.conf for one node that claims 2 GPUs (fake device nodes)."""
    for sub in ("spool", "state", "log", "dev"):
        (root / sub).mkdir()
    for k in range(2):
        os.mknod(root / "dev" / f"gpu{k}", 0o666 | 0o020000, os.makedev(1, 3))  # like /dev/null
    host = socket.gethostname()
    port = free_port()
    conf = root / "slurm.conf"
    conf.write_text(f"""ClusterName=dermflowtest
SlurmctldHost={host}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SlurmdParameters=config_overrides
GresTypes=gpu
ReturnToService=2
MinJobAge=3600
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmdSpoolDir={root}/spool
StateSaveLocation={root}/state
SlurmctldLogFile={root}/log/slurmctld.log
SlurmdLogFile={root}/log/slurmd.log
SlurmctldPort={port}
SlurmdPort={port + 1}
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
JobAcctGatherType=jobacct_gather/none
NodeName={host} CPUs=16 RealMemory=512000 Gres=gpu:2 State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
""")
    (root / "gres.conf").write_text(f"NodeName={host} Name=gpu File={root}/dev/gpu[0-1]\n")
    return conf


@pytest.fixture(scope="module")
def slurm_cluster(tmp_path_factory):
    reason = unavailable()
    if reason:
        if os.environ.get("CI") and os.geteuid() == 0:  # .ci/run installs the packages as root
            pytest.fail(f"the SLURM test must run in CI, but {reason}")
        pytest.skip(reason)
    root = tmp_path_factory.mktemp("slurm")
    conf = write_config(root)
    env = {**os.environ, "SLURM_CONF": str(conf)}
    SYSTEM_CONF.mkdir(exist_ok=True)
    links = [SYSTEM_CONF / "slurm.conf", SYSTEM_CONF / "gres.conf"]
    procs = []
    try:
        for link in links:
            link.symlink_to(root / link.name)
        if subprocess.run(["pgrep", "-x", "munged"], capture_output=True).returncode != 0:
            Path("/run/munge").mkdir(parents=True, exist_ok=True)
            procs.append(subprocess.Popen(["munged", "-F", "--force"],
                                          stderr=subprocess.DEVNULL))
        for daemon in ("slurmctld", "slurmd"):
            procs.append(subprocess.Popen([daemon, "-D", "-f", str(conf)], env=env,
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            state = subprocess.run(["sinfo", "-h", "-o", "%T"], env=env, capture_output=True,
                                   text=True).stdout.strip()
            if state == "idle":
                break
            time.sleep(1)
        else:
            log = (root / "log/slurmctld.log").read_text(errors="replace")[-2000:]
            pytest.fail(f"the test cluster did not come up (sinfo: {state!r}):\n{log}")
        yield env
    finally:
        subprocess.run(["scancel", "--full", "--partition", "debug"], env=env,
                       capture_output=True)
        for proc in reversed(procs):
            proc.terminate()
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
        for link in links:
            link.unlink(missing_ok=True)


SMALL = {  # the demo, smaller still: this DAG runs once more, job by job through sbatch
    "classifier": {"epochs": 2, "warmup_epochs": 1},
    # two classifiers trained at the same time: GPU jobs that overlap (experiments without
    # generator data plan no baseline, attention maps or GAN)
    "experiments": [{"name": "none_resnet50v2_deit", "balance": "none",
                     "model": "resnet50v2_deit"},
                    {"name": "strong_baseline", "balance": "none", "model": "resnetv2_50",
                     "overrides": {"lr_warmup_epochs": 1}}],
    "dataset": {"external_test": False},
}
# Up to the predictions: the evaluation and report jobs after them need no GPU, and through
# sbatch each step of the DAG costs ~12 s (a new Snakemake per job, and the executor's status
# checks back off by 10 s while nothing finishes).
TARGETS = [f"results/experiments/{e['name']}/predictions.csv" for e in SMALL["experiments"]]
STAMP = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})")


def job_window(log: Path) -> tuple[datetime, datetime]:
    stamps = [m.group(1) for line in log.read_text().splitlines() if (m := STAMP.match(line))]
    parse = lambda s: datetime.strptime(s, "%Y-%m-%d %H:%M:%S,%f")  # noqa: E731
    return parse(stamps[0]), parse(stamps[-1])


MEMORY = "## Peak host memory of every stage"  # benchmarks/RESULTS.md's section
STAGE_RULES = {"split": "split_dataset", "build_dataset augment": "build_augmented_dataset"}


def measured_peaks() -> dict[str, float]:
    """Each rule's peak RSS in GB in RESULTS.md's memory section's table: the largest of its
    stage's rows."""
    text = (REPO / "benchmarks/RESULTS.md").read_text()
    section = text.split(MEMORY, 1)[1].split("\n## ", 1)[0]
    peaks: dict[str, float] = {}
    for stage, gb in re.findall(r"^\| ([a-z_ /]+?)(?: \(.*?\))? \| ([\d. /]+) \|", section,
                                re.M):
        rule = STAGE_RULES.get(stage, STAGE_RULES.get(stage.split()[0], stage.split()[0]))
        peaks[rule] = max(peaks.get(rule, 0.0), *map(float, gb.split("/")))
    return peaks


def test_memory_requests_cover_the_measured_peaks_and_fit_a_16_gb_node():
    """Each job asks for half as much again as its stage's peak host memory at the paper's
    size, and none for more than 16 GB: a larger request only waits for a larger node."""
    peaks = measured_peaks()
    assert {"train_gan", "check_synthetic", "train_classifier", "report"} <= set(peaks)
    resources = profile_resources()
    for rule, peak in peaks.items():
        assert resources[rule]["mem_mb"] >= 1.5 * peak * 1000, (rule, peak)
    assert max(asked["mem_mb"] for asked in resources.values()) <= 16000


@pytest.mark.workflow
def test_demo_dag_runs_through_sbatch_on_distinct_gpus(slurm_cluster, tmp_path, monkeypatch):
    for key, value in slurm_cluster.items():
        monkeypatch.setenv(key, value)
    workdir = with_weights(copy_workflow(tmp_path / "w"))
    (workdir / "small.yaml").write_text(yaml.safe_dump(SMALL))
    proc = snakemake(workdir, *TARGETS, "--profile", "profiles/slurm", "--configfile",
                     "profiles/demo/demo.yaml", "small.yaml", "--default-resources",
                     "slurm_partition=debug", "mem_mb=2000", "runtime=30", "cpus_per_task=1",
                     "--slurm-no-account", "--slurm-status-command", "squeue",
                     "--slurm-keep-successful-logs", "--slurm-init-seconds-before-status-checks",
                     "2", "--jobs", "4", "--latency-wait", "5")
    out = proc.stdout + proc.stderr
    submitted = set(re.findall(r"rule (\w+)\S*.*?submitted with SLURM jobid", out)) or set(
        re.findall(r"Job \d+ has been submitted with SLURM jobid \d+ \(log: \S*/rule_(\w+)/",
                   out))
    planned = set(re.findall(r"^rule (\w+):$", out, flags=re.MULTILINE))
    assert {"split_dataset", "train_classifier", "predict"} <= planned <= submitted, (
        planned - submitted, out[-3000:])

    windows = []
    for rule in GPU_RULES:
        for log in (workdir / "logs").glob(f"{rule}*.log"):
            text = log.read_text()
            match = re.search(r"CUDA_VISIBLE_DEVICES=(\d+) set by the scheduler \(SLURM job "
                              r"(\d+)\)", text)
            assert match, f"{log.name} does not show SLURM's GPU assignment"
            windows.append((log.name, match.group(1), *job_window(log)))
    overlapping = [(a, b) for a, b in itertools.combinations(windows, 2)
                   if a[2] < b[3] and b[2] < a[3]]
    assert overlapping, "no two GPU jobs ran at the same time"
    for a, b in overlapping:
        assert a[1] != b[1], f"{a[0]} and {b[0]} ran together on GPU {a[1]}"
