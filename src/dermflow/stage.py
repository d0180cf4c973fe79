"""Running a pipeline stage from a Snakemake script: log file, provenance, clear errors."""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import socket
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tqdm.contrib.logging import logging_redirect_tqdm

from dermflow.atomic import NO_SPACE, disk_full, stale_temporaries, temporaries_in
from dermflow.errors import DermflowError, FileAccessError
from dermflow.logs import JobFormatter, job_tag
from dermflow.provenance import clear_sources, write_provenance

log = logging.getLogger(__name__)


class OutputsBusyError(DermflowError):
    """An earlier instance of the same job still runs and writes the same outputs."""


def lock_path(outputs: Sequence[str | os.PathLike[str]]) -> Path:
    """The lock file of a job: ``.<first output>.lock`` beside its first output.

    Snakemake never gives two jobs the same output, so the first output names the
    job; the lock sits beside it, not in it, as Snakemake deletes directory outputs
    before a job runs.
    """
    first = Path(outputs[0])
    return first.with_name(f".{first.name}.lock")


@contextmanager
def hold_outputs(rule: str, outputs: Sequence[str | os.PathLike[str]],
                 own_folder: str | os.PathLike[str] | None = None) -> Iterator[None]:
    """Claim a job's outputs while it runs, then delete what an interrupted run left.

    When Snakemake itself is killed its running jobs go on as orphans, and a rerun
    would start a second instance writing the same files. The job flocks its lock
    file (the kernel releases it when the process ends, however it ends), so the
    second instance stops with a message naming the first; once the claim is held,
    no one else writes these outputs, so their stale ``.<name>.<random>.tmp`` files
    (a killed job's atomic writes) can go, and so can those in ``own_folder``, a
    folder only this job writes (its checkpoints: a job killed while saving one
    leaves a temporary the size of the model).
    """
    path = lock_path(outputs)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid, host = (os.pread(fd, 200, 0).decode(errors="replace").split() + ["?", "?"])[:2]
            raise OutputsBusyError(
                f"rule {rule}: an earlier instance of this job (pid {pid} on {host}) still "
                f"holds its outputs ({', '.join(map(str, outputs))}), probably left running "
                "when Snakemake was killed. Wait for it to finish or end it "
                f"(`kill {pid}` on {host}), then rerun; see README, 'When a run is "
                "interrupted'") from None
        except OSError as err:  # a file system without flock: run, unguarded
            log.warning("cannot lock %s (%s): a second instance of this job would not be "
                        "noticed", path, err)
        else:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()} {socket.gethostname()}\n".encode(), 0)
        stale = [p for output in outputs for p in stale_temporaries(output)]
        for path in stale + (temporaries_in(own_folder) if own_folder else []):
            log.info("removing %s, left behind by an interrupted run", path)
            path.unlink(missing_ok=True)
        yield
    finally:
        os.close(fd)


class LogFile(logging.FileHandler):
    """A job's log file. On a full disk (often the one the log is on) a record that does
    not fit is dropped, not printed as a traceback of its own: stderr still has it."""

    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802 (logging's name)
        err = sys.exc_info()[1]
        if not (isinstance(err, OSError) and err.errno in NO_SPACE):
            super().handleError(record)

    def close(self) -> None:
        """Close the file; what a full disk kept from it stays unwritten."""
        try:
            super().close()
        except OSError as err:
            if err.errno not in NO_SPACE:
                raise


def user_error(err: BaseException, where: str | os.PathLike[str] | None = None,
               ) -> DermflowError | None:
    """The one-line error a user can act on that ``err`` is, or None for a bug.

    Besides dermflow's own errors, an OSError the user fixes outside dermflow is one:
    a full disk or quota, a permission refused or a read-only file system, on a file
    the system names (for a full disk, else ``where``: the job's first output, as the
    job writes there).
    """
    if isinstance(err, DermflowError):
        return err
    if not isinstance(err, OSError):
        return None
    path = os.fsdecode(err.filename) if isinstance(err.filename, (str, bytes)) else None
    if err.errno in NO_SPACE:
        return disk_full(path or where or ".")
    if not path:  # a refusal that names no file is not one the user can locate
        return None
    if err.errno in (errno.EACCES, errno.EPERM):
        return FileAccessError(f"permission denied: {path}: let this user read and write it "
                               "(or its folder), or run in a folder of your own, and rerun")
    if err.errno == errno.EROFS:
        return FileAccessError(f"read-only file system: {path}: run where results can be "
                               "written (or remount it writable) and rerun")
    return None


@contextmanager
def run_stage(smk: Any) -> Iterator[logging.Logger]:
    """Log to the rule's log file and stderr; on success record provenance beside the outputs.

    Every line names the job by its wildcards (dermflow.logs.job_tag), as jobs run side
    by side on one console; while the stage runs, console lines go through tqdm, so a
    line is printed above a progress bar instead of through it.

    The job holds its outputs while it runs (``hold_outputs``). Expected failures
    (bad data, bad config, offline, a job already running, a full disk, a permission
    refused: ``user_error``) end the job with status 1 and one readable message in
    the log; anything else is a bug, and its traceback goes to the log too.
    """
    log_path = Path(smk.log[0])
    log_path.parent.mkdir(parents=True, exist_ok=True)
    root = logging.getLogger()
    log_path.write_bytes(b"")  # a new log per run, appended to: DDP rank 0 writes it too
    handlers = [LogFile(log_path, mode="a"), logging.StreamHandler(sys.stderr)]
    formatter = JobFormatter(job_tag(getattr(smk, "wildcards", {}).items()))
    for handler in handlers:
        handler.setFormatter(formatter)
        root.addHandler(handler)
    root.setLevel(logging.INFO)
    logger = logging.getLogger(f"dermflow.{smk.rule}")
    clear_sources()  # this stage's provenance names what it reads, nothing an earlier one did
    try:
        # params.checkpoints: the folder of the job's training checkpoints (its own)
        with hold_outputs(smk.rule, list(smk.output), smk.params.get("checkpoints")), \
                logging_redirect_tqdm([root]):
            yield logger
            write_provenance(Path(smk.output[0]).parent, smk.rule, dict(smk.config))
    except Exception as err:
        expected = user_error(err, smk.output[0])
        if expected is None:
            logger.exception("unexpected error, a bug in dermflow: please report it with this log")
        else:
            logger.error("%s", expected)
        raise SystemExit(1) from None
    finally:
        for handler in handlers:
            root.removeHandler(handler)
            handler.close()

