"""Claiming GPUs for a job: Snakemake counts GPUs but never assigns them locally.

Locally, a job takes an exclusive ``flock`` on one lock file per free GPU and
restricts itself to those GPUs with CUDA_VISIBLE_DEVICES, so ``--resources
gpu=2`` puts two jobs on two different GPUs. The kernel drops a ``flock`` when
its process dies, so a killed job never leaves a stale claim. A job that finds
every GPU held waits for one as long as it takes (the workflow starts no more GPU
jobs than there are GPUs, see ``jobenv.limit_gpu_jobs``, so it waits only for jobs
of other runs or users), saying who holds them.

Under SLURM the scheduler's CUDA_VISIBLE_DEVICES is trusted only when it names
exactly the GPUs the job asked for. snakemake-executor-plugin-slurm submits a rule
with ``resources: gpu=N`` as ``sbatch --gpus=N`` (no ``--ntasks`` unless the rule sets
``tasks``: one task) and runs it as one step, ``srun -n1 --gpus=N`` (its jobstep
plugin's ``get_gpu_setting``); SLURM gives that step its N GPUs in
CUDA_VISIBLE_DEVICES (and SLURM_STEP_GPUS), so the job uses them as they are, without
locks: under cgroup device constraints two jobs on one node both see GPU 0, and a
lock named ``gpu0`` would make one wait for the other's GPU. A local Snakemake inside
an allocation (``salloc --gpus=4``, then ``snakemake --resources gpu=4``) hands every
job the allocation's CUDA_VISIBLE_DEVICES=0,1,2,3: more GPUs than a job asks for, so
the jobs claim among them with locks kept per SLURM job (the allocations of other
jobs on the node hold other GPUs, whatever their indices say), in a folder
``slurm-<job id>`` that goes with the allocation's last lock: each job removes its
lock files as it lets go (a job killed meanwhile leaves its own, reused by the next).
"""

from __future__ import annotations

import fcntl
import logging
import os
import socket
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import torch

from dermflow.errors import DermflowError

log = logging.getLogger(__name__)

DEFAULT_LOCK_DIR = "/tmp/dermflow-gpu-locks"
CPU_REASON = "no GPU: running on the CPU"
REPORT_EVERY = 300.0  # seconds between two "still waiting for a GPU" log lines


class DeviceError(DermflowError):
    """The GPUs a job needs cannot be had (all held, or too few assigned)."""


@dataclass(frozen=True)
class Claim:
    """The device a job computes on and the physical GPUs it holds."""

    device: torch.device  # cuda:0 (the first claimed GPU after remapping) or cpu
    physical: tuple[int, ...]  # physical GPU indices held; empty on the CPU
    reason: str  # one line for the log saying how the device was chosen


def _visible_ids() -> list[int] | None:
    """CUDA_VISIBLE_DEVICES as indices (None when unset); like CUDA, a negative id ends it."""
    value = os.environ.get("CUDA_VISIBLE_DEVICES")
    if value is None:
        return None
    ids: list[int] = []
    for item in filter(None, (v.strip() for v in value.split(","))):
        try:
            index = int(item)
        except ValueError:
            raise DeviceError(f"CUDA_VISIBLE_DEVICES={value!r}: dermflow needs GPU indices, "
                              f"not {item!r} (UUIDs and MIG ids are not supported)") from None
        if index < 0:
            break
        ids.append(index)
    return ids


def _scheduler(visible: list[int], n: int) -> str | None:
    """Who assigned this job's CUDA_VISIBLE_DEVICES, if that choice is to be taken as it is:
    always when the user says so, and from SLURM when it names no more than the job's
    ``n`` GPUs (more: an allocation shared by several jobs, which claim among them)."""
    if os.environ.get("DERMFLOW_TRUST_CUDA_VISIBLE_DEVICES") == "1":
        return "DERMFLOW_TRUST_CUDA_VISIBLE_DEVICES=1"
    if "SLURM_JOB_ID" in os.environ and len(visible) <= n:
        return f"SLURM job {os.environ['SLURM_JOB_ID']}"
    return None


def _cpu(reason: str = CPU_REASON) -> Claim:
    claim = Claim(torch.device("cpu"), (), reason)
    log.info("%s", claim.reason)
    return claim


def _lock_dir(lock_dir: str | Path | None, allocation: str | None = None) -> Path:
    """The lock folder, created world-writable (sticky, like /tmp) for every user's jobs;
    inside a SLURM ``allocation`` its own subfolder, for the GPUs only its jobs see."""
    folder = Path(lock_dir or os.environ.get("DERMFLOW_GPU_LOCK_DIR") or DEFAULT_LOCK_DIR)
    try:
        folder.mkdir(parents=True)
    except FileExistsError:
        pass
    else:
        folder.chmod(0o1777)  # umask would narrow mkdir's mode; sticky: no one deletes others'
    if allocation is None:
        return folder
    own = folder / f"slurm-{allocation}"
    own.mkdir(exist_ok=True)
    return own


def _open_lock(path: Path) -> int:
    """A descriptor of the lock file ``path``, created if need be."""
    try:
        return os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    except FileNotFoundError:  # an allocation's folder, removed as its last job let go
        path.parent.mkdir(exist_ok=True)
        return _open_lock(path)
    except PermissionError:  # another user's lock file: flock works read-only too
        try:
            return os.open(path, os.O_RDONLY)
        except PermissionError:
            raise DeviceError(f"cannot open the GPU lock {path}: its owner must make it "
                              "readable (chmod 666)") from None


def _is_file_at(fd: int, path: Path) -> bool:
    """Whether ``fd`` is still the file ``path`` names (its holder may have removed it)."""
    try:
        at = os.stat(path)
    except FileNotFoundError:
        return False
    held = os.fstat(fd)
    return (at.st_dev, at.st_ino) == (held.st_dev, held.st_ino)


def _try_lock(path: Path, owner: str | None = None) -> int | None:
    """An open descriptor holding ``path`` exclusively, or None when another job holds it.

    A lock file is removed only by its holder (``_release``), so a lock taken on a file
    that is no longer at ``path`` was taken after that holder let go, on a file no
    other job will open again: the lock is taken again on the file now at ``path``.
    """
    while True:
        fd = _open_lock(path)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        if _is_file_at(fd, path):
            break
        os.close(fd)
    if os.fstat(fd).st_uid == os.geteuid():
        os.fchmod(fd, 0o666)  # so other users' jobs can open it for writing too
    with suppress(OSError):  # opened read-only: the holder note is informative only
        os.ftruncate(fd, 0)
        note = f"pid {os.getpid()} on {socket.gethostname()}"
        os.pwrite(fd, f"{note} ({owner})\n".encode() if owner else f"{note}\n".encode(), 0)
    return fd


def _release(fd: int, path: Path, remove: bool) -> None:
    """Let go of a lock. With ``remove`` (an allocation's lock), delete its file first,
    while still holding it, so no other job holds that file then; the folder goes with
    the allocation's last lock file (another job holding one keeps it)."""
    if remove:
        with suppress(OSError):
            path.unlink()
    os.close(fd)
    if remove:
        with suppress(OSError):  # not empty: another job of the allocation holds a GPU
            path.parent.rmdir()


def _holder(path: Path) -> str:
    """Who holds a lock, as its holder wrote it."""
    try:
        note = path.read_text().strip()
    except OSError:
        note = ""
    return f"held by {note}" if note else "held"


def _holders(folder: Path, busy: list[int]) -> str:
    return "; ".join(f"GPU {gpu} {_holder(folder / f'gpu{gpu}.lock')}" for gpu in busy)


def _duration(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min {secs:02d} s"


@contextmanager
def claim_gpus(n: int = 1, *, lock_dir: str | Path | None = None, device_count: int | None = None,
               timeout: float | None = None, poll: float = 1.0,
               report_every: float = REPORT_EVERY, owner: str | None = None) -> Iterator[Claim]:
    """Hold ``n`` GPUs that no other dermflow job on this machine holds, or the CPU if none.

    Enter it before anything initialises CUDA: the claim works by setting
    CUDA_VISIBLE_DEVICES, which CUDA reads only once. ``device_count`` (default
    ``torch.cuda.device_count()``, which counts through NVML without initialising
    CUDA) lets tests fake GPUs. While the GPUs are held by others it retries every
    ``poll`` seconds, and logs who holds them (pid, host and ``owner``, the note
    each claim leaves in its lock file) when it starts waiting and every
    ``report_every`` seconds after. It waits as long as it takes (a job queued
    behind a long training run must not fail), or with a ``timeout`` raises
    DeviceError naming the holders after that many seconds.
    """
    previous = os.environ.get("CUDA_VISIBLE_DEVICES")
    if n <= 0:
        yield _cpu()
        return
    visible = _visible_ids()
    scheduler = None if visible is None else _scheduler(visible, n)
    if scheduler is not None and visible is not None:
        if not visible:
            yield _cpu()
            return
        if len(visible) < n:
            raise DeviceError(f"{n} GPUs needed but {scheduler} assigned only "
                              f"CUDA_VISIBLE_DEVICES={previous}")
        usable = torch.cuda.device_count() if device_count is None else device_count
        if usable == 0:  # e.g. a GPU node whose driver is missing: say so, run on the CPU
            yield _cpu(f"CUDA_VISIBLE_DEVICES={previous} set by the scheduler ({scheduler}), "
                       "but no CUDA device is usable: running on the CPU")
            return
        claim = Claim(torch.device("cuda", 0), tuple(visible),
                      f"CUDA_VISIBLE_DEVICES={previous} set by the scheduler ({scheduler})")
        log.info("%s", claim.reason)
        yield claim
        return
    count = torch.cuda.device_count() if device_count is None else device_count
    pool = (list(range(count)) if visible is None else visible)[:max(count, 0)]
    if not pool:
        yield _cpu()
        return
    if n > len(pool):
        raise DeviceError(f"{n} GPUs needed but only {len(pool)} available: {pool}")
    if torch.cuda.is_initialized():
        raise DeviceError("CUDA was initialised before claim_gpus(), so CUDA_VISIBLE_DEVICES "
                          "can no longer pick the GPU: claim the GPU first")
    allocation = os.environ.get("SLURM_JOB_ID") if visible is not None else None
    folder = _lock_dir(lock_dir, allocation)
    start = time.monotonic()
    next_report = start
    waiting = False
    with ExitStack() as locks:
        while True:
            held: list[int] = []
            busy: list[int] = []
            for gpu in pool:
                path = folder / f"gpu{gpu}.lock"
                fd = _try_lock(path, owner)
                if fd is None:
                    busy.append(gpu)
                    continue
                locks.callback(_release, fd, path, allocation is not None)
                held.append(gpu)
                if len(held) == n:
                    break
            if len(held) == n:
                break
            locks.close()  # all or nothing: a partial grab would starve other jobs while we wait
            now = time.monotonic()
            if timeout is not None and now - start >= timeout:
                raise DeviceError(f"could not claim {n} free GPU(s) of {pool} within "
                                  f"{timeout:g} s: {_holders(folder, busy)} (locks in {folder})")
            if now >= next_report:
                log.info("waiting for %d free GPU(s) of %s%s: %s (locks in %s)", n, pool,
                         f" ({_duration(now - start)} so far)" if now > start else "",
                         _holders(folder, busy), folder)
                next_report = now + report_every
                waiting = True
            time.sleep(poll if timeout is None else min(poll, start + timeout - now))
        ids = ",".join(map(str, held))
        source = f"CUDA_VISIBLE_DEVICES={previous}" if visible is not None else str(len(pool))
        if allocation is not None:
            source += f" (SLURM job {allocation}, shared by its jobs)"
        files = ", ".join(str(folder / f"gpu{gpu}.lock") for gpu in held)
        os.environ["CUDA_VISIBLE_DEVICES"] = ids
        claim = Claim(torch.device("cuda", 0), tuple(held),
                      f"claimed GPU {ids} of {source} (lock {files})"
                      + (f" after waiting {_duration(time.monotonic() - start)}" if waiting
                         else ""))
        log.info("%s", claim.reason)
        try:
            yield claim
        finally:
            if previous is None:
                os.environ.pop("CUDA_VISIBLE_DEVICES", None)
            else:
                os.environ["CUDA_VISIBLE_DEVICES"] = previous
