"""The training engine classifiers and generators share: seeded, resumable epochs.

A run is ``Trainer.run``: resume from the checkpoint if it belongs to this run, then per
epoch draw the order (dermflow.training.sampling) from generators seeded by (seed, epoch)
alone, train, validate, keep the best epoch by ``select``, and write an atomic checkpoint.
So a killed job that resumes reaches the same weights as one that never stopped. What an
epoch does is a subclass's: it overrides the hooks below (nnU-Net's trainer has the same
shape), and the classifier loop (dermflow.training.loop) and the generator loop
(dermflow.gan.training) are two such subclasses. A checkpoint holds ``fingerprint``,
``epoch``, ``history``, the selection (``select``, ``best_metric``, ``best_epoch``,
``best_state``) and whatever the subclass's ``state`` adds.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dermflow.atomic import atomic_path
from dermflow.torchfile import load_plain
from dermflow.training.distributed import is_writer
from dermflow.training.sampling import epoch_order

log = logging.getLogger(__name__)

Row = dict[str, float]  # one epoch's line of the history


def fingerprint(settings: Any) -> str:
    """A short hash of a dataclass of settings: a checkpoint resumes only the run it belongs to."""
    return hashlib.sha256(json.dumps(asdict(settings), sort_keys=True, default=str).encode()
                          ).hexdigest()[:16]


def seed_epoch(seed: int, epoch: int,
               device: torch.device) -> tuple[torch.Generator, torch.Generator]:
    """Generators (host, device) and global RNGs for one epoch, from (seed, epoch) alone."""
    value = int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0])
    torch.manual_seed(value)
    host = torch.Generator().manual_seed(value)
    on_device = torch.Generator(device=device).manual_seed(value)
    return host, on_device


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    """Atomically, so a job killed while writing leaves the previous epoch's checkpoint."""
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load_checkpoint(path: Path, device: torch.device) -> dict[str, Any]:
    """A checkpoint save_checkpoint wrote (tensors and plain data only: no code runs);
    DamagedFileError for any other file, whose cure is to train from the start."""
    return load_plain(path, map_location=device,
                      remedy="delete it and rerun: training then starts from epoch 1")


@dataclass
class Monitor:
    """The best value so far of one history column (lower is better for a loss) and its
    epoch (0-based; -1 before any)."""

    column: str
    value: float = field(init=False)
    epoch: int = field(init=False, default=-1)

    def __post_init__(self) -> None:
        self.value = math.inf if self.lower else -math.inf

    @property
    def lower(self) -> bool:
        return self.column.endswith("loss")

    def better(self, value: float, than: float) -> bool:
        """Whether ``value`` beats ``than`` (a tie does not: the earlier epoch stays)."""
        return value < than if self.lower else value > than

    def update(self, row: Row, epoch: int) -> bool:
        """Take ``row``'s value if it beats the best so far; whether it did."""
        if not self.better(row[self.column], self.value):
            return False
        self.value, self.epoch = row[self.column], epoch
        return True


class Trainer:
    """One run of ``epochs`` epochs over ``positions`` (drawn by ``weights``, ``epoch_images``
    a pass: dermflow.training.sampling.epoch_order), checkpointed at ``checkpoint``.

    ``select`` names the history column whose best epoch is kept (``best_state``, the
    ``kept`` network's weights); None keeps the last epoch. Subclasses implement
    ``train_epoch`` and may override the other hooks; ``log`` is the logger their lines
    go to.
    """

    log = log

    def __init__(self, *, epochs: int, seed: int, device: torch.device,
                 positions: torch.Tensor, weights: torch.Tensor | None,
                 epoch_images: int | None, checkpoint: Path | None, run_id: str,
                 select: str | None = None) -> None:
        self.epochs, self.seed, self.device = epochs, seed, device
        self.positions, self.weights, self.epoch_images = positions, weights, epoch_images
        self.checkpoint, self.run_id = checkpoint, run_id
        self.best = Monitor(select) if select is not None else None
        self.best_state: dict[str, torch.Tensor] | None = None
        self.history: list[Row] = []
        self.start = 0

    # -- hooks ------------------------------------------------------------------------
    def prepare(self) -> None:
        """After resuming, before the first epoch (wrap the model for DDP, compile it)."""

    def stop_early(self, epoch: int) -> bool:
        """Whether to end the run before ``epoch``."""
        return False

    def train_epoch(self, epoch: int, order: torch.Tensor, generator: torch.Generator) -> Row:
        """One pass over ``order`` (augmenting from the device ``generator``); the row's
        training columns."""
        raise NotImplementedError

    def validate(self, order: torch.Tensor, generator: torch.Generator) -> Row:
        """The row's validation columns (none by default)."""
        return {}

    def kept(self) -> torch.nn.Module:
        """The network whose weights ``select`` keeps."""
        raise NotImplementedError

    def end_epoch(self, epoch: int, row: Row) -> None:
        """After the epoch is recorded and selected on, before its checkpoint (schedules,
        the progress line)."""

    def state(self) -> dict[str, Any]:
        """What a checkpoint holds beside the engine's own keys."""
        return {}

    def load(self, saved: dict[str, Any]) -> None:
        """Restore what ``state`` saved."""

    # -- the run ----------------------------------------------------------------------
    def run(self) -> list[Row]:
        """Every epoch not yet in the checkpoint; the whole history."""
        self.resume()
        self.prepare()
        for epoch in range(self.start, self.epochs):
            if self.stop_early(epoch):
                break
            host, on_device = seed_epoch(self.seed, epoch, self.device)
            order = epoch_order(self.positions, self.weights, host, self.epoch_images)
            row = {"epoch": epoch + 1, **self.train_epoch(epoch, order, on_device)}
            row.update(self.validate(order, on_device))
            self.history.append(row)
            self.keep_best(epoch, row)
            self.end_epoch(epoch, row)
            self.save(epoch)
        return self.history

    def keep_best(self, epoch: int, row: Row) -> None:
        """Keep a copy of the ``kept`` network's weights when this epoch is the best."""
        if self.best is not None and self.best.update(row, epoch):
            self.best_state = copy.deepcopy(
                {k: v.detach().cpu() for k, v in self.kept().state_dict().items()})

    def resume(self) -> None:
        """Load the checkpoint if it was written by this run (its fingerprint: the same
        settings, the selection column included)."""
        if self.checkpoint is None or not self.checkpoint.is_file():
            return
        saved = load_checkpoint(self.checkpoint, self.device)
        if saved["fingerprint"] != self.run_id:
            self.log.info("ignoring checkpoint %s: it belongs to another configuration",
                          self.checkpoint)
            return
        self.load(saved)
        self.history, self.start = saved["history"], saved["epoch"]
        if self.best is not None:
            self.best.value, self.best.epoch = saved["best_metric"], saved["best_epoch"]
            self.best_state = saved["best_state"]
        self.log.info("resuming from %s after epoch %d", self.checkpoint, self.start)

    def save(self, epoch: int) -> None:
        """The checkpoint after ``epoch`` (rank 0 alone writes)."""
        if self.checkpoint is None or not is_writer():
            return
        selection = {} if self.best is None else {
            "select": self.best.column, "best_metric": self.best.value,
            "best_epoch": self.best.epoch, "best_state": self.best_state}
        save_checkpoint(self.checkpoint, {"fingerprint": self.run_id, "epoch": epoch + 1,
                                          "history": self.history, **selection,
                                          **self.state()})
