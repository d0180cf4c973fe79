"""run_stage: one job at a time per output set, no debris from interrupted runs, errors logged."""

from __future__ import annotations

import errno
import logging
import os
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from tqdm import tqdm

from dermflow.errors import DatasetError
from dermflow.logs import FORMAT, job_tag, line_format
from dermflow.stage import lock_path, run_stage


def job(tmp_path: Path, rule: str = "cache_images") -> SimpleNamespace:
    """What run_stage reads of Snakemake's ``snakemake`` object."""
    return SimpleNamespace(rule=rule, log=[str(tmp_path / "logs" / f"{rule}.log")],
                           output=[str(tmp_path / "cache" / "images_32.npy"),
                                   str(tmp_path / "cache" / "index_32.csv")],
                           config={}, params={}, resources={})


def test_stale_temporaries_of_the_outputs_are_removed_before_the_stage(tmp_path):
    smk = job(tmp_path)
    cache = tmp_path / "cache"
    cache.mkdir()
    stale = [cache / ".images_32.npy.a1b2c3d4.tmp", cache / ".index_32.csv.x_9k2m0p.tmp"]
    kept = [cache / ".images_64.npy.a1b2c3d4.tmp", cache / "notes.txt"]
    for path in stale + kept:
        path.write_bytes(b"partial")
    with run_stage(smk):
        assert not any(p.exists() for p in stale)
        (cache / "images_32.npy").write_bytes(b"x")
        (cache / "index_32.csv").write_text("x")
    assert all(p.exists() for p in kept)
    assert "left behind by an interrupted run" in Path(smk.log[0]).read_text()


def test_a_killed_save_of_the_jobs_own_checkpoint_is_removed(tmp_path):
    smk = job(tmp_path, "train_gan")
    smk.params = {"checkpoints": str(tmp_path / "ckpt")}
    (tmp_path / "ckpt").mkdir()
    last = tmp_path / "ckpt" / "last.pt"
    last.write_bytes(b"epoch 3")
    stale = tmp_path / "ckpt" / ".last.pt.0a1b2c3d.tmp"
    stale.write_bytes(b"half of epoch 4")
    with run_stage(smk):
        assert not stale.exists() and last.read_bytes() == b"epoch 3"
        for output in smk.output:
            Path(output).write_bytes(b"x")


HOLDER = """
import fcntl, os, socket, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)
fcntl.flock(fd, fcntl.LOCK_EX)
os.write(fd, f"{os.getpid()} {socket.gethostname()}".encode())
print("held", flush=True)
time.sleep(60)
"""


def test_second_instance_of_a_running_job_refuses_to_start(tmp_path):
    smk = job(tmp_path)
    lock = lock_path(smk.output)
    lock.parent.mkdir(parents=True)
    orphan = subprocess.Popen([sys.executable, "-c", HOLDER, str(lock)], stdout=subprocess.PIPE,
                              text=True)
    try:
        assert orphan.stdout.readline().strip() == "held"
        partial = lock.parent / ".images_32.npy.a1b2c3d4.tmp"
        partial.write_bytes(b"the orphan is still writing this")
        with pytest.raises(SystemExit) as stop, run_stage(smk):
            pytest.fail("the stage ran beside a running instance of itself")
        assert stop.value.code == 1
        log = Path(smk.log[0]).read_text()
        assert f"earlier instance of this job (pid {orphan.pid}" in log
        assert f"kill {orphan.pid}" in log and "When a run is interrupted" in log
        assert partial.exists(), "the running instance's files are left alone"
    finally:
        orphan.kill()
        orphan.wait()
    with run_stage(smk):  # the lock died with its holder
        assert os.getpid() == int(lock.read_text().split()[0])
        Path(smk.output[0]).write_bytes(b"x")


def test_expected_errors_log_a_message_and_bugs_a_traceback(tmp_path):
    smk = job(tmp_path)
    with pytest.raises(SystemExit), run_stage(smk):
        raise DatasetError("metadata x.csv lacks column dx")
    log = Path(smk.log[0]).read_text()
    assert "metadata x.csv lacks column dx" in log and "Traceback" not in log
    with pytest.raises(SystemExit), run_stage(smk):
        raise KeyError("a bug")
    log = Path(smk.log[0]).read_text()
    assert "Traceback" in log and "KeyError: 'a bug'" in log


@pytest.mark.parametrize(("code", "message"), [
    (errno.ENOSPC, "disk full: {path} does not fit, "),
    (errno.EDQUOT, "disk full: {path} does not fit"),
    (errno.EACCES, "permission denied: {path}: let this user read and write it"),
    (errno.EPERM, "permission denied: {path}: let this user read and write it"),
    (errno.EROFS, "read-only file system: {path}: run where results can be written"),
])
def test_os_errors_a_user_can_fix_are_one_line_naming_the_path(tmp_path, code, message):
    smk = job(tmp_path)
    path = tmp_path / "cache" / "images_32.npy"
    with pytest.raises(SystemExit), run_stage(smk):
        raise OSError(code, os.strerror(code), str(path))
    lines = Path(smk.log[0]).read_text().splitlines()
    errors = [line for line in lines if " ERROR " in line]
    assert len(errors) == 1 and message.format(path=path) in errors[0], lines
    if code in (errno.ENOSPC, errno.EDQUOT):  # what is free, on which file system
        assert re.search(r"[\d,]+ bytes( \([\d.]+ [MG]B\))? free on /", errors[0]), errors[0]
    assert "Traceback" not in "\n".join(lines) and "a bug" not in "\n".join(lines)


def test_a_full_disk_the_system_does_not_locate_names_the_jobs_output(tmp_path):
    smk = job(tmp_path)
    with pytest.raises(SystemExit), run_stage(smk):
        raise OSError(errno.ENOSPC, "No space left on device")  # as a failed write() says it
    log = Path(smk.log[0]).read_text()
    assert f"disk full: {smk.output[0]} does not fit" in log and "Traceback" not in log


@pytest.mark.parametrize("err", [
    OSError(errno.ENOENT, "No such file or directory", "results/x.csv"),
    OSError(errno.EACCES, "Permission denied"),  # no file named: nothing the user can fix
    ValueError("a bug"),
])
def test_other_errors_stay_bugs_with_their_traceback(tmp_path, err):
    smk = job(tmp_path)
    with pytest.raises(SystemExit), run_stage(smk):
        raise err
    log = Path(smk.log[0]).read_text()
    assert "a bug in dermflow" in log and "Traceback" in log


def test_every_line_of_an_experiments_job_names_it(tmp_path):
    smk = job(tmp_path, "evaluate")
    smk.wildcards = {"experiment": "none_resnet50v2_deit", "fold": "2"}
    with run_stage(smk):
        logging.getLogger("dermflow.evaluation.evaluate").info("test n=36 accuracy 0.9")
        for output in smk.output:
            Path(output).parent.mkdir(parents=True, exist_ok=True)
            Path(output).write_bytes(b"x")
    lines = Path(smk.log[0]).read_text().splitlines()
    assert lines and all("[none_resnet50v2_deit fold=2] dermflow." in line for line in lines)
    assert job_tag([]) == "" and line_format("") == FORMAT  # one job of its rule: no tag


def test_the_log_is_new_each_run_and_keeps_what_others_append(tmp_path):
    """A DDP job's rank 0 appends to the job's log while the job writes it too: the job's
    later lines go after rank 0's, never over them; a rerun starts the log afresh."""
    smk = job(tmp_path, "train_classifier")
    Path(smk.log[0]).parent.mkdir(parents=True)
    Path(smk.log[0]).write_text("the previous run's lines\n" * 50)
    with run_stage(smk) as logger:
        logger.info("starting 2 DDP workers")
        with open(smk.log[0], "a") as rank0:
            rank0.write("rank 0: epoch 1 val_macro_f1 0.41\n")
        logger.info("the workers ended")
        for output in smk.output:
            Path(output).parent.mkdir(parents=True, exist_ok=True)
            Path(output).write_bytes(b"x")
    lines = Path(smk.log[0]).read_text().splitlines()
    assert [line.rsplit(": ", 1)[-1] for line in lines] == [
        "starting 2 DDP workers", "epoch 1 val_macro_f1 0.41", "the workers ended"], lines


def test_a_percent_sign_in_a_wildcard_is_logged_as_itself(tmp_path):
    smk = job(tmp_path, "evaluate")
    smk.wildcards = {"experiment": "oversample_50%_resnet18"}
    with run_stage(smk) as logger:
        logger.info("test n=36")
        for output in smk.output:
            Path(output).parent.mkdir(parents=True, exist_ok=True)
            Path(output).write_bytes(b"x")
    assert "[oversample_50%_resnet18] dermflow.evaluate: test n=36" in Path(smk.log[0]).read_text()


def test_log_lines_print_above_a_progress_bar_not_through_it(tmp_path, capsys):
    smk = job(tmp_path)
    with run_stage(smk):
        with tqdm(total=2, file=sys.stderr) as bar:
            bar.update(1)
            logging.getLogger("dermflow.data.cache").info("cached 1 image")
            bar.update(1)
        for output in smk.output:
            Path(output).parent.mkdir(parents=True, exist_ok=True)
            Path(output).write_bytes(b"x")
    line = next(x for x in capsys.readouterr().err.split("\r") if "cached 1 image" in x)
    assert "%|" not in line and line.endswith("cached 1 image\n")  # a line of its own
