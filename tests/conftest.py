"""Shared fixtures: the repository root, small image datasets made on the fly and the DAG runs
many tests read; and how the suite spreads over pytest-xdist workers."""

from __future__ import annotations

import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import yaml
from packaging.version import Version

# Workers of one machine share its cores: OpenMP threads that spin while they wait would take
# them from the other worker's DAG (set before torch loads, inherited by the DAGs' jobs).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

REPO = Path(__file__).resolve().parents[1]
# Offline pretrained weights beside the checkout, where a team keeps them (AlexNet conv layers,
# for LPIPS); the tests that need them skip without.
SHARED_WEIGHTS = REPO.parent / "shared" / "weights"


# A test that reads a shared run goes to the worker that makes it (--dist loadgroup), so each
# run is made once; the first fixture named here that a test needs decides. The runs made
# from scratch share a group: one worker makes them while the other makes the demo run.
SHARED_RUNS = {"demo_run": "demo", "cv_run": "scratch", "smoke_course": "scratch"}


def pytest_configure(config: pytest.Config) -> None:
    if config.getoption("dist", "no") == "loadgroup" and Version(pytest.__version__) >= Version(
            "9.2.dev0"):  # each worker would make every shared run itself
        raise pytest.UsageError(
            "pytest 9.2 breaks pytest-xdist's --dist loadgroup (pytest-dev/pytest-xdist#1386): "
            "pip install 'pytest<9.2' (as pyproject.toml's test extra does), or run with -n 0")
    workers = os.environ.get("PYTEST_XDIST_WORKER_COUNT")
    if workers:  # a worker's share of the cores
        import torch
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // int(workers)))


def pytest_itemcollected(item: pytest.Item) -> None:
    """Group the readers of each shared run (before xdist names the groups)."""
    fixtures = getattr(item, "fixturenames", ())
    group = next((SHARED_RUNS[f] for f in SHARED_RUNS if f in fixtures), None)
    if group and item.config.pluginmanager.hasplugin("xdist"):
        item.add_marker(pytest.mark.xdist_group(group))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Start the DAG tests first: the slowest work begins early and the short unit tests
    fill the other worker's gaps."""
    items.sort(key=lambda item: item.get_closest_marker("workflow") is None)


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


def write_jpeg(path: Path, rng: np.random.Generator, size: tuple[int, int] = (40, 30)) -> None:
    """A small random RGB JPEG."""
    image = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), image)


@pytest.fixture
def tiny_dataset(tmp_path: Path) -> Path:
    """A HAM10000-layout folder: metadata + one image folder, 3 lesions x 2 images per class."""
    rng = np.random.default_rng(0)
    root = tmp_path / "raw"
    rows = []
    n = 0
    for dx in ("bkl", "nv", "df", "mel", "vasc", "bcc", "akiec"):
        for lesion in range(3):
            for _ in range(2):
                image_id = f"ISIC_{n:07d}"
                rows.append({"lesion_id": f"HAM_{dx}{lesion}", "image_id": image_id, "dx": dx,
                             "dx_type": "histo", "age": 50.0, "sex": "male",
                             "localization": "back"})
                write_jpeg(root / "HAM10000_images_part_1" / f"{image_id}.jpg", rng)
                n += 1
    pd.DataFrame(rows).to_csv(root / "HAM10000_metadata.csv", index=False)
    return root


def write_png_header(path: Path, width: int, height: int) -> None:
    """A PNG that declares an 8-bit RGB image of width x height and holds no pixels.

    Enough to test size limits: they act on the header, before any decoding.
    """
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data)))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b""))


@pytest.fixture
def broken_dataset(tiny_dataset: Path) -> tuple[Path, dict[str, str]]:
    """tiny_dataset broken nine ways, every class keeping images; (root, image_id → reason).

    One exact repeat of a metadata row is no fault: it is kept once.
    """
    root = tiny_dataset
    images = root / "HAM10000_images_part_1"
    meta = pd.read_csv(root / "HAM10000_metadata.csv")
    data = (images / "ISIC_0000000.jpg").read_bytes()
    (images / "ISIC_0000000.jpg").write_bytes(data[: len(data) // 2])
    (images / "ISIC_0000001.jpg").write_bytes(b"")
    (images / "ISIC_0000006.jpg").unlink()
    (images / "ISIC_0000007.jpg").unlink()
    write_png_header(images / "ISIC_0000007.png", 14000, 13000)  # over Pillow's bomb limit
    meta.loc[meta["image_id"] == "ISIC_0000012", "dx"] = "melanoma"
    gray = np.full((30, 40), 128, np.uint8)
    cv2.imwrite(str(images / "ISIC_0000018.jpg"), gray)
    (images / "ISIC_0000024.jpg").unlink()
    cv2.imwrite(str(images / "ISIC_0000024.png"), np.full((30, 40, 4), 200, np.uint8))
    (images / "ISIC_0000030.jpg").write_text("not an image")
    conflicting = meta[meta["image_id"] == "ISIC_0000036"].assign(lesion_id="HAM_other")
    meta = pd.concat([meta, conflicting, meta[meta["image_id"] == "ISIC_0000013"]])
    meta.to_csv(root / "HAM10000_metadata.csv", index=False)
    return root, {
        "ISIC_0000000": "not a readable image",
        "ISIC_0000001": "empty file (0 bytes)",
        "ISIC_0000006": "missing file",
        "ISIC_0000007": "image too large",
        "ISIC_0000012": "unknown dx 'melanoma'",
        "ISIC_0000018": "colour mode L",
        "ISIC_0000024": "colour mode RGBA",
        "ISIC_0000030": "not a readable image",
        "ISIC_0000036": "image_id on lines 38, 44 of HAM10000_metadata.csv with different "
                        "lesion_id",
    }


WORKFLOW_PARTS = ("Snakefile", "config.yaml", "workflow", "profiles", "envs", "src")
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))


def copy_workflow(dest: Path, parts: tuple[str, ...] = WORKFLOW_PARTS) -> Path:
    """A private copy of the workflow and its library, so tests can edit code and config."""
    dest.mkdir(parents=True, exist_ok=True)
    for part in parts:
        src = REPO / part
        if src.is_dir():
            shutil.copytree(src, dest / part, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(src, dest / part)
    return dest


def snakemake(workdir: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    """Run snakemake in ``workdir``; output is returned (and shown when it fails)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    command = [SNAKEMAKE, *args]
    with subprocess.Popen(command, cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, env=env, start_new_session=True) as running:
        try:
            out, err = running.communicate(timeout=1800)
        except subprocess.TimeoutExpired:
            os.killpg(running.pid, signal.SIGKILL)  # its jobs too, not only snakemake
            out, err = running.communicate()
            raise AssertionError(f"snakemake {' '.join(args)} timed out:\n{out}\n{err}") from None
    proc = subprocess.CompletedProcess(command, running.returncode, out, err)
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc


def planned_jobs(workdir: Path, *args: str) -> dict[str, int]:
    """rule → job count that a dry run would execute."""
    out = snakemake(workdir, "-n", *args).stdout
    jobs: dict[str, int] = {}
    if "Job stats:" not in out:
        return jobs
    table = out.split("Job stats:", 1)[1].splitlines()
    for line in table[3:]:
        parts = line.split()
        if len(parts) != 2 or parts[0] == "total":
            break
        jobs[parts[0]] = int(parts[1])
    return jobs


def with_weights(workdir: Path) -> Path:
    """Link the shared pretrained weights where config.yaml's weights_dir looks for them."""
    if SHARED_WEIGHTS.is_dir():
        (workdir / "resources").mkdir(exist_ok=True)
        (workdir / "resources/weights").symlink_to(SHARED_WEIGHTS)
    return workdir


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory) -> Path:
    """The demo DAG, run once per test session; many tests read its outputs."""
    workdir = with_weights(copy_workflow(tmp_path_factory.mktemp("demo")))
    snakemake(workdir, "--profile", "profiles/demo")
    return workdir


def fresh_run(tmp_path_factory, name: str, overrides: dict) -> Path:
    """The demo profile with ``overrides`` merged over it, run to the end in a new folder."""
    workdir = with_weights(copy_workflow(tmp_path_factory.mktemp(name)))
    (workdir / f"{name}.yaml").write_text(yaml.safe_dump(overrides))
    snakemake(workdir, *demo_args(f"{name}.yaml"))
    return workdir


@dataclass
class SmokeCourse:
    """benchmarks/gpu_proof.py --smoke's folder and what each of its two calls left."""
    work: Path
    first: subprocess.CompletedProcess  # stopped by SIGTERM once the split was made
    first_state: dict  # .gpu-proof/state.json after the first call
    first_summary: bool  # whether the first call wrote out/summary.md
    second: subprocess.CompletedProcess  # --budget, --gpu-jobs 2: resumes and finishes


KIT_PARTS = ("benchmarks", "tests", "pyproject.toml")  # what the GPU kit needs beside them


def kit_command(work: Path, *args: str) -> list[str]:
    """benchmarks/gpu_proof.py --smoke in ``work`` (LPIPS's weights when shared), with ``args``."""
    weights = ["--weights", str(SHARED_WEIGHTS)] if SHARED_WEIGHTS.is_dir() else []
    return [sys.executable, str(work / "benchmarks/gpu_proof.py"), "--smoke", *weights,
            "--out", str(work / "out"), *args]


@pytest.fixture(scope="session")
def smoke_course(tmp_path_factory) -> SmokeCourse:
    """The GPU proof kit's CPU course, called as on a time-limited machine: the first call
    is stopped by SIGTERM (as the machine's end would) once the split is made, the second,
    within a budget, runs the benchmarks and then resumes the DAGs beside the GPU tests. Its
    protocol-paper DAG (demo data, the proposed model only) is also the suite's run of the
    paper's split."""
    work = copy_workflow(tmp_path_factory.mktemp("smoke"), WORKFLOW_PARTS + KIT_PARTS)
    with subprocess.Popen(kit_command(work, "--steps", "dag-quick"), cwd=work, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT) as running:
        split = work / ".gpu-proof/runs/quick/results/benchmarks/split_dataset.tsv"
        deadline = time.monotonic() + 900
        while not split.is_file() and running.poll() is None and time.monotonic() < deadline:
            time.sleep(1)
        running.send_signal(signal.SIGTERM)
        output = running.communicate(timeout=300)[0]
    first = subprocess.CompletedProcess(running.args, running.returncode, output)
    state = json.loads((work / ".gpu-proof/state.json").read_text())
    summary = (work / "out/summary.md").is_file()
    second = subprocess.run(kit_command(work, "--budget", "1500", "--gpu-jobs", "2"), cwd=work,
                            capture_output=True, text=True, timeout=1800)
    return SmokeCourse(work, first, state, summary, second)


def demo_args(overrides: str) -> tuple[str, ...]:
    """Snakemake's arguments for the demo profile with an overrides file merged over it."""
    return ("--profile", "profiles/demo", "--configfile", "profiles/demo/demo.yaml", overrides)


def switch_demo(demo_run: Path, tmp_path_factory, name: str,
                overrides: dict) -> tuple[Path, dict[str, int]]:
    """A copy of the demo run with ``overrides`` merged over the demo profile, run to the end;
    returns it and the jobs the switch planned (what a rerun must redo)."""
    workdir = tmp_path_factory.mktemp(name) / "run"
    shutil.copytree(demo_run, workdir, symlinks=True)
    (workdir / f"{name}.yaml").write_text(yaml.safe_dump(overrides))
    jobs = planned_jobs(workdir, *demo_args(f"{name}.yaml"))
    snakemake(workdir, *demo_args(f"{name}.yaml"))
    return workdir, jobs
