"""Several GPUs for one training job: DistributedDataParallel launched by the job itself.

``run_distributed`` starts one process per GPU (torch.multiprocessing, NCCL on
CUDA, gloo on the CPU) joined in a process group on a free local port. The
training loop (dermflow.training.loop.fit) then keeps the single-process semantics: every
rank draws the same epoch order and augments the same global batch from the same
seeds, and trains on its share of it (rank r takes rows r, r + world, ...);
DDP averages the gradients, which is the gradient of the global batch's mean
loss. Rank 0 alone writes checkpoints and outputs.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


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


def _worker(rank: int, world: int, port: int, backend: str,
            fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    if backend == "nccl":
        torch.cuda.set_device(rank)
    dist.init_process_group(backend, rank=rank, world_size=world)
    try:
        fn(rank, *args)
    finally:
        dist.destroy_process_group()


def run_distributed(fn: Callable[..., Any], world: int, *args: Any,
                    backend: str | None = None) -> None:
    """Run ``fn(rank, *args)`` in ``world`` processes of one process group, and wait."""
    backend = backend or ("nccl" if torch.cuda.is_available() else "gloo")
    mp.spawn(_worker, args=(world, _free_port(), backend, fn, args), nprocs=world, join=True)
