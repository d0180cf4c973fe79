"""Dermflow's torch files: written atomically, read back as tensors and plain data only.

Every model file (a classifier, the baseline, a generator) is one format: a dict of
``state_dict`` (the network's weights) beside plain metadata that says how to rebuild the
network (``save_model``; dermflow.models.io and dermflow.gan.networks read their own keys).
Model files travel between labs (``dermflow predict``), and unpickling runs whatever code a
pickle names, so every dermflow file (model, checkpoint, generator) is read with
``weights_only=True``: tensors, containers and plain values load, anything else is refused
before it runs. What a file's bytes make torch.load raise is the file's fault, not a bug,
so it becomes a DamagedFileError naming the file and how to get a good one.
"""

from __future__ import annotations

import os
import pickle
import re
from collections.abc import Iterable
from typing import Any

import torch

from dermflow.atomic import atomic_path
from dermflow.errors import DamagedFileError

GLOBAL = re.compile(r"GLOBAL ([\w.]+)")  # what the weights-only unpickler refused to call


def load_plain(path: str | os.PathLike[str], *, remedy: str,
               map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """The dict of tensors and plain metadata a dermflow file holds.

    DamagedFileError (with ``remedy``) for a file that names code to run, is truncated,
    or is not a torch file; a missing or unreadable file stays an OSError.
    """
    try:
        saved = torch.load(path, map_location=map_location, weights_only=True)
    except OSError:
        raise
    except pickle.UnpicklingError as err:
        named = GLOBAL.search(str(err))
        if named is None:
            raise DamagedFileError(path, "damaged: its pickled data do not load", remedy) from err
        raise DamagedFileError(path, f"refused: loading it would call {named.group(1)}, and a "
                               "dermflow file holds only tensors and plain data", remedy) from None
    except Exception as err:  # whatever torch's readers raise on these bytes, the file is at fault
        raise DamagedFileError(path, "truncated, or not a file torch.save wrote "
                               f"({type(err).__name__})", remedy) from err
    if not isinstance(saved, dict):
        raise DamagedFileError(path, f"holds a {type(saved).__name__}, not a dermflow file's "
                               "weights and metadata", remedy)
    return saved


def save_model(model: torch.nn.Module, path: str | os.PathLike[str], **meta: Any) -> None:
    """A model file: the weights together with the metadata that rebuilds the network."""
    with atomic_path(path) as tmp:
        torch.save({"state_dict": model.state_dict(), **meta}, tmp)


def require(saved: dict[str, Any], keys: Iterable[str], path: str | os.PathLike[str], *,
            what: str, remedy: str) -> None:
    """DamagedFileError unless ``saved`` holds every one of ``keys`` (``what``: the kind of
    dermflow file it should be)."""
    missing = [key for key in keys if key not in saved]
    if missing:
        raise DamagedFileError(path, f"not a dermflow {what} (it lacks {', '.join(missing)})",
                               remedy)


def fill(network: torch.nn.Module, state: dict[str, torch.Tensor],
         path: str | os.PathLike[str], *, described: str, remedy: str) -> None:
    """Load ``state`` into ``network``; weights that do not fit it (missing, unexpected or
    misshapen) are the file's fault: ``described`` says what its metadata describes."""
    try:
        network.load_state_dict(state)
    except RuntimeError as err:
        raise DamagedFileError(path, f"its weights do not fit {described}", remedy) from err
