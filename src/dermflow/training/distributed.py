"""Several GPUs for one training job: DistributedDataParallel launched by the job itself.

``run_distributed`` starts one process per GPU (NCCL on CUDA; gloo on the CPU, where
``gpus: N`` runs N CPU processes: the same code path, rehearsed without a GPU) joined in
a process group on a free local port. The training loop (dermflow.training.loop.fit)
then keeps the single-process semantics: every rank draws the same epoch order and
augments the same global batch from the same seeds, and trains on its share of it
(rank r takes rows r, r + world, ...); DDP averages the gradients, which is the
gradient of the global batch's mean loss. Rank 0 alone writes checkpoints and outputs.

The workers are fresh interpreters (the spawn start method: CUDA cannot be forked), and
spawn normally re-runs the parent's ``__main__`` file in each of them
(``multiprocessing.spawn.get_preparation_data`` passes ``__main__.__file__`` on). Under
Snakemake that file is the rule's script, which has no main guard and whose
``snakemake`` object exists only in the parent (snakemake/snakemake#2678), so the
workers are started with ``__main__`` hidden: what they run is named by module
(``fn`` must live in an importable module, not in ``__main__``). Each worker inherits
the parent's environment (CUDA_VISIBLE_DEVICES as claimed, CUBLAS_WORKSPACE_CONFIG),
its determinism settings and its share of the parent's CPU threads.
"""

from __future__ import annotations

import os
import pickle
import socket
import sys
import tempfile
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


def _worker(rank: int, world: int, port: int, backend: str, threads: int,
            determinism: Determinism, errors: str, fn: Callable[..., Any],
            args: tuple[Any, ...]) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(threads)
    determinism.apply()
    if backend == "nccl":
        torch.cuda.set_device(rank)
    dist.init_process_group(backend, rank=rank, world_size=world)
    try:
        with deterministic_errors():
            fn(rank, *args)
    except DermflowError as err:  # kept whole, so the job reports it as the user's to fix
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


def run_distributed(fn: Callable[..., Any], world: int, *args: Any,
                    backend: str | None = None) -> None:
    """Run ``fn(rank, *args)`` in ``world`` processes of one process group, and wait.

    A DermflowError in any rank is raised here as itself (the first rank's that had one);
    anything else as torch.multiprocessing's ProcessRaisedException with its traceback.
    """
    if getattr(fn, "__module__", None) == "__main__":
        raise ValueError(f"{fn.__qualname__} is defined in __main__: the workers import what "
                         "they run by module, so define it in one")
    backend = backend or ("nccl" if torch.cuda.is_available() else "gloo")
    threads = max(1, torch.get_num_threads() // world)
    with tempfile.TemporaryDirectory(prefix="dermflow-ranks-") as errors:
        worker_args = (world, _free_port(), backend, threads, Determinism.current(), errors,
                       fn, args)
        with _main_hidden():
            context = mp.start_processes(_worker, args=worker_args, nprocs=world, join=False,
                                         start_method="spawn")
        try:
            while not context.join():
                pass
        except (mp.ProcessRaisedException, mp.ProcessExitedException):
            for path in sorted(Path(errors).glob("rank*.pickle")):
                raise pickle.loads(path.read_bytes()) from None
            raise
