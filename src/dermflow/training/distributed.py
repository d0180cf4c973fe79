"""Several GPUs for one training job: DistributedDataParallel launched by the job itself.

``run_distributed`` starts one process per GPU (NCCL when the job claimed GPUs; gloo
on the CPU, where ``gpus: N`` runs N CPU processes: the same code path, rehearsed
without a GPU) joined in a process group on a free local port. The training loop
(dermflow.training.loop.fit) then keeps the single-process semantics: every rank draws
the same epoch order and augments the same global batch from the same seeds, and
trains on its share of it (rank r takes rows r, r + world, ...); DDP averages the
gradients, which is the gradient of the global batch's mean loss. Rank 0 alone writes
checkpoints and outputs.

The workers are fresh interpreters (the spawn start method: CUDA cannot be forked), and
spawn normally re-runs the parent's ``__main__`` file in each of them
(``multiprocessing.spawn.get_preparation_data`` passes ``__main__.__file__`` on). Under
Snakemake that file is the rule's script, which has no main guard and whose
``snakemake`` object exists only in the parent (snakemake/snakemake#2678), so the
workers are started with ``__main__`` hidden: what they run is named by module
(``fn`` must live in an importable module, not in ``__main__``). Each worker inherits
the parent's environment (CUDA_VISIBLE_DEVICES as claimed, CUBLAS_WORKSPACE_CONFIG),
its determinism settings and its share of the parent's CPU threads.

No worker outlives the job: the job's GPU locks (dermflow.training.device) die with the
job process, and a rank still training would share its GPU with the next job that
claims it. So the job stops its workers on any way out of ``run_distributed``
(SIGTERM, Snakemake's cancel, included: it is raised as SystemExit while the workers
run), and on Linux each worker asks the kernel for SIGTERM when the job dies without
unwinding (SIGKILL, an out-of-memory kill), which ends it even while it waits in a
collective.
"""

from __future__ import annotations

import ctypes
import logging
import os
import pickle
import signal
import socket
import sys
import tempfile
import threading
import types
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from dermflow.errors import DermflowError
from dermflow.training.determinism import Determinism, deterministic_errors

log = logging.getLogger(__name__)

PR_SET_PDEATHSIG = 1  # linux/prctl.h
STOP_GRACE = 10.0  # seconds a worker has to end after SIGTERM before it is killed


def rank_world() -> tuple[int, int]:
    """(rank, world size) of this process; (0, 1) outside a process group."""
    if in_process_group():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def in_process_group() -> bool:
    """Whether this process is a rank of a process group (run_distributed's workers are,
    one process among them too): fit() then trains through DistributedDataParallel."""
    return dist.is_available() and dist.is_initialized()


def is_writer() -> bool:
    """Only rank 0 writes files."""
    return rank_world()[0] == 0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _die_with_parent(parent: int) -> None:
    """Have Linux send this worker SIGTERM when the job process dies, however it dies.

    It replaces torch's own request (SIGINT, raised as KeyboardInterrupt only once the
    rank is back in Python, never while it waits in C++ for a peer that died);
    SIGTERM has no handler in a worker, so the kernel ends it wherever it is.
    """
    if not sys.platform.startswith("linux"):
        return
    ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM))
    if os.getppid() != parent:  # the job died before the request was made
        raise SystemExit(1)


def _worker(rank: int, world: int, port: int, backend: str, threads: int,
            determinism: Determinism, errors: str, parent: int, fn: Callable[..., Any],
            args: tuple[Any, ...]) -> None:
    _die_with_parent(parent)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(threads)
    determinism.apply()
    if backend == "nccl":
        torch.cuda.set_device(rank)
    dist.init_process_group(backend, rank=rank, world_size=world)
    try:
        with deterministic_errors():
            fn(rank, *args)
    except (DermflowError, OSError) as err:  # kept whole: the job tells whether it is the
        # user's to fix (dermflow.stage.user_error: a full disk, a permission refused)
        Path(errors, f"rank{rank}.pickle").write_bytes(pickle.dumps(err))
        raise
    finally:
        dist.destroy_process_group()


@contextmanager
def _main_hidden() -> Iterator[None]:
    """While workers start, a ``__main__`` without a file, so spawn does not re-run it."""
    main = sys.modules["__main__"]
    sys.modules["__main__"] = types.ModuleType("__main__")
    try:
        yield
    finally:
        sys.modules["__main__"] = main


def _raise_exit(signum: int, frame: types.FrameType | None) -> None:
    raise SystemExit(128 + signum)


@contextmanager
def _sigterm_raises() -> Iterator[None]:
    """SIGTERM raised as SystemExit, so the job unwinds (and stops its workers) before it
    ends; signals reach the main thread only, so elsewhere nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_exit)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _stop(processes: list[Any]) -> None:
    """End the workers still running: SIGTERM, then SIGKILL after STOP_GRACE seconds."""
    running = [p for p in processes if p.is_alive()]
    if not running:
        return
    log.warning("stopping the DDP workers still running (pid %s)",
                ", ".join(str(p.pid) for p in running))
    for process in running:
        process.terminate()
    for process in running:
        process.join(STOP_GRACE)
        if process.is_alive():
            process.kill()
            process.join()


def run_distributed(fn: Callable[..., Any], world: int, *args: Any,
                    device: torch.device) -> None:
    """Run ``fn(rank, *args)`` in ``world`` processes of one process group, and wait.

    ``device`` is what the job claimed: GPUs train over NCCL, the CPU over gloo (also on
    a machine with GPUs, when the job was given none).
    A DermflowError or OSError in any rank is raised here as itself (the first rank's
    that had one; an OSError with the worker's traceback as its cause, as it may be a
    bug); anything else as torch.multiprocessing's ProcessRaisedException with its
    traceback. Workers still running when this returns or raises are stopped.
    """
    if getattr(fn, "__module__", None) == "__main__":
        raise ValueError(f"{fn.__qualname__} is defined in __main__: the workers import what "
                         "they run by module, so define it in one")
    backend = "nccl" if device.type == "cuda" else "gloo"
    threads = max(1, torch.get_num_threads() // world)
    with tempfile.TemporaryDirectory(prefix="dermflow-ranks-") as errors, _sigterm_raises():
        worker_args = (world, _free_port(), backend, threads, Determinism.current(), errors,
                       os.getpid(), fn, args)
        with _main_hidden():
            context = mp.start_processes(_worker, args=worker_args, nprocs=world, join=False,
                                         start_method="spawn")
        try:
            while not context.join():
                pass
        except (mp.ProcessRaisedException, mp.ProcessExitedException) as failed:
            for path in sorted(Path(errors).glob("rank*.pickle")):
                err = pickle.loads(path.read_bytes())
                if isinstance(err, DermflowError):
                    raise err from None
                raise err from failed
            raise
        finally:
            _stop(context.processes)
