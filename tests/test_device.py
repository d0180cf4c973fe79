"""GPU claims without a GPU: fake device counts, real processes, real flock locks."""

from __future__ import annotations

import fcntl
import multiprocessing as mp
import os
import queue
import signal
import socket
import stat
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch

from dermflow import jobenv
from dermflow.jobenv import gpu_job_limit, limit_gpu_jobs, local_gpu_count
from dermflow.training import device
from dermflow.training.device import Claim, DeviceError, claim_gpus

CTX = mp.get_context("fork")  # fast, and the parent holds no locks when it forks


@pytest.fixture(autouse=True)
def no_scheduler(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts as a plain local job, whatever the machine running the tests set."""
    for var in ("SLURM_JOB_ID", "CUDA_VISIBLE_DEVICES", "DERMFLOW_TRUST_CUDA_VISIBLE_DEVICES",
                "DERMFLOW_GPU_LOCK_DIR", "DERMFLOW_GPU_COUNT"):
        monkeypatch.delenv(var, raising=False)


def hold(lock_dir: str, count: int, records: Any, release: Any, start: Any = None,
         visible: str | None = None, seconds: float = 30) -> None:
    """A job: claim one GPU, record when and what it held, keep it until released."""
    if visible is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = visible
    if start is not None:
        start.wait(10)
    with claim_gpus(1, lock_dir=lock_dir, device_count=count, timeout=30, poll=0.005) as claim:
        records.put(("start", os.getpid(), claim.physical[0],
                     os.environ["CUDA_VISIBLE_DEVICES"], time.monotonic()))
        release.wait(seconds)
        records.put(("end", os.getpid(), claim.physical[0], None, time.monotonic()))


def try_claim(n: int, **kwargs: Any) -> None:
    """Claim and give back at once: for claims that are meant to fail."""
    with claim_gpus(n, **kwargs):
        pass


def spawn_holders(lock_dir: Path, count: int, jobs: int, records: Any, **kwargs: Any
                  ) -> tuple[list[Any], list[Any]]:
    releases = [CTX.Event() for _ in range(jobs)]
    procs = [CTX.Process(target=hold, args=(str(lock_dir), count, records, release),
                         kwargs=kwargs, daemon=True) for release in releases]
    for proc in procs:
        proc.start()
    return procs, releases


def finish(procs: list[Any], releases: list[Any]) -> None:
    for release in releases:
        release.set()
    for proc in procs:
        proc.join(10)
        assert proc.exitcode == 0


def test_a_third_job_waits_for_a_released_gpu(tmp_path: Path) -> None:
    records = CTX.Queue()
    procs, releases = spawn_holders(tmp_path, 2, 3, records)
    try:
        first = [records.get(timeout=10) for _ in range(2)]
        assert [r[0] for r in first] == ["start", "start"]
        assert sorted(r[2] for r in first) == [0, 1]
        assert all(r[3] == str(r[2]) for r in first)  # each sees only its own GPU
        with pytest.raises(queue.Empty):  # both GPUs held: the third must wait
            records.get(timeout=0.5)
        pids = [p.pid for p in procs]
        _, freed_pid, freed_gpu, _, _ = first[0]
        releases[pids.index(freed_pid)].set()
        after = {r[0]: r for r in (records.get(timeout=10) for _ in range(2))}
        assert after["end"][1] == freed_pid
        assert after["start"][1] not in (first[0][1], first[1][1])
        assert after["start"][2] == freed_gpu
        assert after["end"][4] < after["start"][4]
    finally:
        finish(procs, releases)


def test_concurrent_jobs_never_share_a_gpu(tmp_path: Path) -> None:
    records = CTX.Queue()
    start = CTX.Event()
    procs, releases = spawn_holders(tmp_path, 2, 6, records, start=start, seconds=0.05)
    start.set()  # six jobs race for two GPUs, each holding its GPU for 50 ms
    spans: dict[int, dict[str, Any]] = {}
    for _ in range(2 * len(procs)):
        kind, pid, gpu, visible, t = records.get(timeout=10)
        spans.setdefault(pid, {"gpu": gpu})[kind] = t
        if kind == "start":
            assert visible == str(gpu)
    finish(procs, releases)
    assert len(spans) == 6
    timeline = sorted(spans.values(), key=lambda s: s["start"])
    for i, a in enumerate(timeline):
        overlapping = [b for b in timeline[i + 1:] if b["start"] < a["end"]]
        assert all(b["gpu"] != a["gpu"] for b in overlapping), "two jobs held one GPU"
        assert sum(b["start"] <= a["start"] < b["end"] for b in timeline) <= 2


def want_two(lock_dir: str, records: Any, release: Any) -> None:
    """A job that needs two GPUs at once."""
    with claim_gpus(2, lock_dir=lock_dir, device_count=2, timeout=30, poll=0.01) as claim:
        records.put((claim.physical, os.environ["CUDA_VISIBLE_DEVICES"]))
        release.wait(30)


def test_all_or_nothing_does_not_hog_a_free_gpu(tmp_path: Path) -> None:
    records = CTX.Queue()
    procs, releases = spawn_holders(tmp_path, 1, 1, records, visible="1")  # holds GPU 1
    assert records.get(timeout=10)[2] == 1
    pair, done = CTX.Queue(), CTX.Event()
    waiter = CTX.Process(target=want_two, args=(str(tmp_path), pair, done), daemon=True)
    waiter.start()
    try:
        tried = tmp_path / "gpu0.lock"  # the waiter leaves its pid there on each try
        deadline = time.monotonic() + 10
        while not tried.exists() or f"pid {waiter.pid} " not in tried.read_text():
            assert time.monotonic() < deadline, "the 2-GPU claim never tried GPU 0"
            time.sleep(0.005)
        with claim_gpus(1, lock_dir=tmp_path, device_count=2, timeout=5, poll=0.002) as one:
            assert one.physical == (0,)  # the waiting 2-GPU claim kept no partial grab
            finish(procs, releases)  # GPU 1 is free now, GPU 0 still ours
            with pytest.raises(queue.Empty):
                pair.get(timeout=0.3)
        assert pair.get(timeout=10) == ((0, 1), "0,1")
    finally:
        finish([*procs, waiter], [*releases, done])


def test_timeout_names_the_held_gpu_and_its_holder(tmp_path: Path) -> None:
    records = CTX.Queue()
    procs, releases = spawn_holders(tmp_path, 1, 1, records, visible="1")
    try:
        records.get(timeout=10)
        assert (tmp_path / "gpu1.lock").read_text().strip() == (
            f"pid {procs[0].pid} on {socket.gethostname()}")
        t0 = time.monotonic()
        with pytest.raises(DeviceError) as err:
            try_claim(2, lock_dir=tmp_path, device_count=2, timeout=0.2, poll=0.05)
        assert time.monotonic() - t0 >= 0.2
        message = str(err.value)
        assert f"GPU 1 held by pid {procs[0].pid}" in message and "GPU 0" not in message
        with claim_gpus(1, lock_dir=tmp_path, device_count=2, timeout=0) as claim:
            assert claim.physical == (0,)  # the failed 2-GPU claim let GPU 0 go
    finally:
        finish(procs, releases)


def test_killed_holder_releases_its_gpu(tmp_path: Path) -> None:
    records = CTX.Queue()
    procs, releases = spawn_holders(tmp_path, 1, 1, records)
    assert records.get(timeout=10)[0] == "start"
    with pytest.raises(DeviceError, match="GPU 0 held"):
        try_claim(1, lock_dir=tmp_path, device_count=1, timeout=0.05, poll=0.01)
    os.kill(procs[0].pid, signal.SIGKILL)
    procs[0].join(10)
    assert procs[0].exitcode == -signal.SIGKILL
    with claim_gpus(1, lock_dir=tmp_path, device_count=1, timeout=5, poll=0.01) as claim:
        assert claim.physical == (0,)


@pytest.mark.parametrize(("env", "n", "physical", "says"), [
    ({"SLURM_JOB_ID": "123", "CUDA_VISIBLE_DEVICES": "5"}, 1, (5,), "SLURM job 123"),
    ({"DERMFLOW_TRUST_CUDA_VISIBLE_DEVICES": "1", "CUDA_VISIBLE_DEVICES": "4,6"}, 2, (4, 6),
     "DERMFLOW_TRUST_CUDA_VISIBLE_DEVICES=1"),
])
def test_scheduler_assignment_is_used_as_is(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            env: dict[str, str], n: int,
                                            physical: tuple[int, ...], says: str) -> None:
    for var, value in env.items():
        monkeypatch.setenv(var, value)
    with claim_gpus(n, lock_dir=tmp_path / "locks", device_count=len(physical)) as claim:
        assert claim.physical == physical and claim.device == torch.device("cuda", 0)
        assert says in claim.reason
        assert os.environ["CUDA_VISIBLE_DEVICES"] == env["CUDA_VISIBLE_DEVICES"]
    assert not (tmp_path / "locks").exists()


def test_scheduler_assignment_without_a_usable_gpu_runs_on_the_cpu(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLURM_JOB_ID", "9")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    with claim_gpus(1, device_count=0) as claim:
        assert claim.device == torch.device("cpu")
        assert "CUDA_VISIBLE_DEVICES=1 set by the scheduler (SLURM job 9)" in claim.reason


def test_scheduler_with_too_few_gpus_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLURM_JOB_ID", "7")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3")
    with pytest.raises(DeviceError, match="assigned only CUDA_VISIBLE_DEVICES=3"):
        try_claim(2)


def test_slurm_without_gpu_assignment_claims_locally(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLURM_JOB_ID", "8")
    with claim_gpus(1, lock_dir=tmp_path, device_count=1) as claim:
        assert claim.physical == (0,) and (tmp_path / "gpu0.lock").exists()


def test_user_restricted_pool_is_respected_and_restored(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    with claim_gpus(1, lock_dir=tmp_path, device_count=2) as claim:
        assert claim.physical == (2,) and os.environ["CUDA_VISIBLE_DEVICES"] == "2"
        assert "of CUDA_VISIBLE_DEVICES=2,3" in claim.reason
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "2,3"
    records = CTX.Queue()
    procs, releases = spawn_holders(tmp_path, 2, 1, records)  # inherits 2,3; holds GPU 2
    try:
        assert records.get(timeout=10)[2:4] == (2, "2")
        with claim_gpus(1, lock_dir=tmp_path, device_count=2, timeout=5, poll=0.01) as claim:
            assert claim.physical == (3,) and os.environ["CUDA_VISIBLE_DEVICES"] == "3"
    finally:
        finish(procs, releases)
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "2,3"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gpu2.lock", "gpu3.lock"]


def test_claim_is_released_and_env_restored_on_error(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError), claim_gpus(1, lock_dir=tmp_path, device_count=1) as c:
        assert c.reason == f"claimed GPU 0 of 1 (lock {tmp_path / 'gpu0.lock'})"
        raise RuntimeError("training crashed")
    assert "CUDA_VISIBLE_DEVICES" not in os.environ
    with claim_gpus(1, lock_dir=tmp_path, device_count=1, timeout=0) as claim:
        assert claim.physical == (0,)


@pytest.mark.parametrize(("n", "count", "visible"), [(1, 0, None), (0, 2, None), (1, 2, "-1"),
                                                     (1, 2, "")])
def test_no_gpu_means_cpu(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, n: int, count: int,
                          visible: str | None) -> None:
    if visible is not None:
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    with claim_gpus(n, lock_dir=tmp_path / "locks", device_count=count) as claim:
        assert claim == Claim(torch.device("cpu"), (), "no GPU: running on the CPU")
        assert os.environ.get("CUDA_VISIBLE_DEVICES") == visible
    assert not (tmp_path / "locks").exists()


def test_unusable_requests_fail_clearly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(DeviceError, match="3 GPUs needed but only 2"):
        try_claim(3, lock_dir=tmp_path, device_count=2)
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    with pytest.raises(DeviceError, match="CUDA was initialised before"):
        try_claim(1, lock_dir=tmp_path, device_count=2)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-1234")
    with pytest.raises(DeviceError, match="UUIDs"):
        try_claim(1, lock_dir=tmp_path, device_count=2)


def test_default_lock_dir_is_shared_by_all_users(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "shared" / "locks"
    monkeypatch.setenv("DERMFLOW_GPU_LOCK_DIR", str(folder))
    old = os.umask(0o077)
    try:
        with claim_gpus(1, device_count=1):
            assert stat.S_IMODE(folder.stat().st_mode) == 0o1777
            assert stat.S_IMODE((folder / "gpu0.lock").stat().st_mode) == 0o666
    finally:
        os.umask(old)


def test_another_users_read_only_lock_file_still_locks(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "gpu0.lock").write_text("pid 1 on elsewhere\n")
    real_open = os.open
    other_user = [True]  # this job may not write the file; the next job may

    def open_as(path: Any, flags: int, *args: Any) -> int:
        if other_user[0] and flags & os.O_RDWR:
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, flags, *args)

    monkeypatch.setattr(os, "open", open_as)
    with claim_gpus(1, lock_dir=tmp_path, device_count=1) as claim:
        assert claim.physical == (0,)
        other_user[0] = False
        with pytest.raises(DeviceError, match="GPU 0 held by pid 1 on elsewhere"):
            try_claim(1, lock_dir=tmp_path, device_count=1, timeout=0)


class FakeClock:
    """time for claim_gpus: sleeping advances it at once; the holder lets go after ``hold_for``."""

    def __init__(self, release: Any, hold_for: float) -> None:
        self.now, self.sleeps, self.release, self.hold_for = 1000.0, 0, release, hold_for

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds
        self.sleeps += 1
        if self.now - 1000.0 >= self.hold_for:
            self.release()


def test_a_busy_gpu_is_waited_for_without_deadline_naming_its_holder(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """Two hours behind a long training job: no DeviceError, one log line per 5 minutes."""
    import fcntl

    import dermflow.training.device as device

    lock = tmp_path / "gpu0.lock"
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)  # another open file: flock conflicts
    fcntl.flock(fd, fcntl.LOCK_EX)
    os.write(fd, b"pid 4242 on ws1 (rule train_classifier experiment=v)\n")
    clock = FakeClock(lambda: fcntl.flock(fd, fcntl.LOCK_UN), hold_for=7200)
    monkeypatch.setattr(device, "time", clock)
    caplog.set_level("INFO", logger="dermflow.training.device")
    try:
        with claim_gpus(1, lock_dir=tmp_path, device_count=1, owner="rule predict") as claim:
            assert claim.physical == (0,)
            note = f"pid {os.getpid()} on {socket.gethostname()} (rule predict)\n"
            assert lock.read_text() == note
    finally:
        os.close(fd)
    assert clock.sleeps == 7200  # polled every second...
    waits = [r.getMessage() for r in caplog.records if r.getMessage().startswith("waiting")]
    assert len(waits) == 7200 // 300  # ...but said so every 5 minutes
    held = "GPU 0 held by pid 4242 on ws1 (rule train_classifier experiment=v)"
    assert waits[0] == f"waiting for 1 free GPU(s) of [0]: {held} (locks in {tmp_path})"
    assert waits[1].startswith("waiting for 1 free GPU(s) of [0] (5 min 00 s so far): GPU 0")
    assert waits[-1].startswith("waiting for 1 free GPU(s) of [0] (1 h 55 min so far): ")
    assert claim.reason.endswith("after waiting 2 h 00 min")


NVIDIA_SMI_L = """\
GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-0a)
GPU 1: NVIDIA A100-SXM4-40GB (UUID: GPU-1b)
  MIG 3g.20gb     Device  0: (UUID: MIG-2c)
GPU 2: NVIDIA H100 80GB HBM3 (UUID: GPU-3d)
"""


@pytest.fixture
def machine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A machine whose nvidia-smi lists ``smi`` (None: no nvidia-smi) and whose NVIDIA
    driver lists ``proc`` GPUs in /proc (None: no driver)."""
    def make(smi: str | None, proc: int | None = None) -> None:
        bin_dir = tmp_path / "bin"
        bin_dir.mkdir(exist_ok=True)
        if smi is not None:  # real nvidia-smi exits with 6 when it finds no GPU
            rc = 6 if smi.startswith("No devices") else 0
            (bin_dir / "nvidia-smi").write_text(f"#!/bin/sh\nprintf '%s' '{smi}'\nexit {rc}\n")
            (bin_dir / "nvidia-smi").chmod(0o755)
        monkeypatch.setenv("PATH", str(bin_dir))
        gpus = tmp_path / "proc-gpus"
        if proc is not None:
            gpus.mkdir()
            for i in range(proc):
                (gpus / f"0000:0{i}:00.0").mkdir()
        monkeypatch.setattr(jobenv, "NVIDIA_PROC", gpus)
    return make


@pytest.mark.parametrize(("smi", "proc", "visible", "count", "says"), [
    (NVIDIA_SMI_L, None, None, 3, "nvidia-smi -L"),
    (NVIDIA_SMI_L, None, "2,0", 2, "nvidia-smi -L, CUDA_VISIBLE_DEVICES=2,0"),
    (NVIDIA_SMI_L, None, "1,7,0", 1, "CUDA_VISIBLE_DEVICES=1,7,0"),  # CUDA stops at 7
    (NVIDIA_SMI_L, None, "", 0, "CUDA_VISIBLE_DEVICES="),
    ("No devices were found\n", 0, None, 0, "proc-gpus"),
    (None, 2, None, 2, "proc-gpus"),
    (None, None, None, None, "no nvidia-smi and no NVIDIA driver"),
    (None, None, "0,1", None, "no nvidia-smi"),
])
def test_gpus_are_counted_without_cuda(machine: Any, monkeypatch: pytest.MonkeyPatch,
                                       smi: str | None, proc: int | None, visible: str | None,
                                       count: int | None, says: str) -> None:
    machine(smi, proc)
    if visible is not None:
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    found, source = local_gpu_count()
    assert found == count and says in source
    monkeypatch.setenv("DERMFLOW_GPU_COUNT", "5")
    assert local_gpu_count() == (5, "DERMFLOW_GPU_COUNT=5")
    monkeypatch.setenv("DERMFLOW_GPU_COUNT", "one")
    with pytest.raises(ValueError, match="DERMFLOW_GPU_COUNT='one'"):
        local_gpu_count()


@pytest.mark.parametrize(("requested", "found", "limit"), [
    (2, 1, 1), (None, 1, 1), (None, 4, 4),  # never more GPUs in use than there are
    (1, 2, None), (2, 2, None), (0, 2, None),  # asked for no more than there are: as asked
    (2, 0, None), (None, 0, None), (2, None, None),  # no GPU (or unknown): CPU jobs, no cap
])
def test_gpu_job_limit(requested: int | None, found: int | None, limit: int | None) -> None:
    assert gpu_job_limit(requested, found) == limit


class FakeResource:
    def __init__(self, value: Any) -> None:
        self.value = value


class FakeWorkflow:
    """What limit_gpu_jobs reads of Snakemake's workflow object."""

    def __init__(self, gpu: Any = None, main: bool = True, nodes: int | None = None) -> None:
        self.is_main_process, self.nodes = main, nodes
        self.global_resources: dict[str, Any] = {}
        if gpu is not None:
            self.global_resources["gpu"] = FakeResource(gpu)


def test_only_a_local_main_process_caps_the_gpu_resource(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DERMFLOW_GPU_COUNT", "1")
    local = FakeWorkflow(gpu=2)
    note = limit_gpu_jobs(local)
    assert local.global_resources["gpu"] == 1
    assert note == ("dermflow: 1 GPU(s) here (DERMFLOW_GPU_COUNT=1), so GPU jobs hold at most "
                    "1 GPU(s) at once (--resources gpu=2): each GPU job holds its GPUs "
                    "exclusively")
    unset = FakeWorkflow()
    assert "(no gpu limit given)" in limit_gpu_jobs(unset)
    assert unset.global_resources["gpu"] == 1
    for untouched in (FakeWorkflow(gpu=2, main=False),  # a job's own snakemake process
                      FakeWorkflow(gpu=2, nodes=50),  # a cluster executor (SLURM)
                      FakeWorkflow(gpu=1), FakeWorkflow(gpu="a100")):
        assert limit_gpu_jobs(untouched) is None
        assert untouched.global_resources["gpu"].value in (2, 1, "a100")


def test_jobs_sharing_a_slurm_allocation_claim_distinct_gpus(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`salloc --gpus=4`, then a local `snakemake --resources gpu=4`: every job inherits the
    allocation's four GPUs; four jobs at once hold four different ones, with locks kept for
    this allocation (another allocation's GPU 0 is another GPU)."""
    monkeypatch.setenv("SLURM_JOB_ID", "41")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1,2,3")
    records = CTX.Queue()
    procs, releases = spawn_holders(tmp_path, 4, 4, records)
    try:
        held = [records.get(timeout=20) for _ in range(4)]
        assert sorted(p.name for p in (tmp_path / "slurm-41").iterdir()) == [
            f"gpu{i}.lock" for i in range(4)]
    finally:
        finish(procs, releases)
    assert sorted(r[2] for r in held) == [0, 1, 2, 3]
    assert sorted(r[3] for r in held) == ["0", "1", "2", "3"]  # what each job's CUDA sees
    assert list(tmp_path.iterdir()) == [], "the allocation's lock folder outlived its jobs"


def test_an_allocations_folder_stays_while_one_of_its_jobs_holds_a_gpu(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """One job of the allocation letting go removes its lock file, never another's claim."""
    monkeypatch.setenv("SLURM_JOB_ID", "44")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    with claim_gpus(1, lock_dir=tmp_path, device_count=2, timeout=0) as first:
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")  # the next claims: other jobs'
        with claim_gpus(1, lock_dir=tmp_path, device_count=2, timeout=0) as second:
            assert (first.physical, second.physical) == ((0,), (1,))
        assert [p.name for p in (tmp_path / "slurm-44").iterdir()] == ["gpu0.lock"]
        with claim_gpus(1, lock_dir=tmp_path, device_count=2, timeout=0) as third:
            assert third.physical == (1,)  # GPU 0 is still the first job's
    assert not (tmp_path / "slurm-44").exists()


def test_a_lock_its_holder_removed_meanwhile_is_taken_on_the_new_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A job opens a lock file, its holder (another job of the allocation) removes it and
    lets go, then the job locks the file it opened: that lock guards nothing, as the next
    job creates a new file. The job must hold the file that is there."""
    monkeypatch.setenv("SLURM_JOB_ID", "45")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    lock = tmp_path / "slurm-45" / "gpu0.lock"
    real_flock = device.fcntl.flock
    removed = []

    def flock_after_its_holder_let_go(fd: int, operation: int) -> None:
        if not removed:
            removed.append(lock)
            lock.unlink()
            lock.parent.rmdir()
        real_flock(fd, operation)

    monkeypatch.setattr(device, "fcntl", SimpleNamespace(
        flock=flock_after_its_holder_let_go, LOCK_EX=fcntl.LOCK_EX, LOCK_NB=fcntl.LOCK_NB))
    with claim_gpus(1, lock_dir=tmp_path, device_count=2, timeout=0) as first:
        assert removed and first.physical == (0,)
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")  # the next claim: another job's
        with claim_gpus(1, lock_dir=tmp_path, device_count=2, timeout=0) as second:
            assert second.physical == (1,)  # GPU 0 is the first job's


def test_a_two_gpu_job_in_a_larger_allocation_claims_two(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLURM_JOB_ID", "42")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1,2,3")
    records = CTX.Queue()
    procs, releases = spawn_holders(tmp_path, 4, 1, records)  # another job holds GPU 0
    try:
        assert records.get(timeout=10)[2] == 0
        with claim_gpus(2, lock_dir=tmp_path, device_count=4, timeout=5) as pair:
            assert pair.physical == (1, 2) and os.environ["CUDA_VISIBLE_DEVICES"] == "1,2"
            assert "SLURM job 42, shared by its jobs" in pair.reason
    finally:
        finish(procs, releases)
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "0,1,2,3"


def test_a_slurm_step_with_exactly_its_gpus_uses_them_without_locks(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`srun -n1 --gpus=2` (how the SLURM executor runs a gpu=2 rule): the step's two GPUs
    are the job's; two such jobs on one node both see 0,1 (cgroups), and neither waits."""
    monkeypatch.setenv("SLURM_JOB_ID", "43")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    with claim_gpus(2, lock_dir=tmp_path, device_count=2) as one, \
            claim_gpus(2, lock_dir=tmp_path, device_count=2, timeout=0) as other:
        assert one.physical == other.physical == (0, 1)
        assert "set by the scheduler (SLURM job 43)" in one.reason
    assert not list(tmp_path.iterdir())
