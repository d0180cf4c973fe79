"""Reading back what torch.save wrote, as tensors and plain data only.

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
from typing import Any

import torch

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
